"""`xft convert`: checkpoints of both engines → Hugging Face artifacts that stock
transformers/peft load in a process that never imports xft, with the logits of the
trained model; adapters merged into their base (plain, QLoRA-trained, vocabulary
resized) against PEFT's unmerged forward; re-sharding."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DEMO_CONFIG, REPO, run_cli, write_config
from safetensors.torch import load_file

from xft.errors import XftError
from xft.tools.merge import merge_adapter
from xft.tools.pth_to_hf import pth_to_hf

TINY = REPO / "xft" / "assets" / "tiny-llama"
TINY_CONFIG = REPO / "configs" / "tiny" / f"{DEMO_CONFIG}.py"
IDS = [[1, 17, 250, 3, 99, 400, 12, 7, 300, 5]]

# Runs with neither xft on the path nor xft imported: what a user without xft has.
STOCK_LOADER = r'''
import json, sys
import torch
from transformers import AutoModelForCausalLM
from transformers import AutoTokenizer
jobs, ids, out = json.loads(sys.argv[1]), torch.tensor(json.loads(sys.argv[2])), sys.argv[3]
logits = {}
for name, (kind, path, base) in jobs.items():
    if kind == "adapter":  # as the model card says: the base, resized to an extended vocabulary
        from peft import PeftModel
        base = AutoModelForCausalLM.from_pretrained(base)
        tokens = len(AutoTokenizer.from_pretrained(path))
        if tokens > base.get_input_embeddings().weight.shape[0]:
            base.resize_token_embeddings(tokens)
        model = PeftModel.from_pretrained(base, path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        logits[name] = model.eval()(input_ids=ids).logits
assert not any(m == "xft" or m.startswith("xft.") for m in sys.modules), "xft was imported"
torch.save(logits, out)
'''


def stock_logits(tmp_path, jobs, ids=IDS):
    """{name: logits} of {name: ('adapter' | 'model', dir)} loaded by stock transformers/peft."""
    out = tmp_path / "stock_logits.pt"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    jobs = {name: (kind, str(path), _base_of(kind, path)) for name, (kind, path) in jobs.items()}
    result = subprocess.run([sys.executable, "-c", STOCK_LOADER, json.dumps(jobs),
                             json.dumps(ids), str(out)], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


def _base_of(kind, path):
    """An adapter's base folder: adapter_config.json's name, where `xft://NAME` (a model
    shipped inside xft) is the folder its model card tells a user without xft to use."""
    from xft.paths import resolve_path

    if kind != "adapter":
        return None
    return resolve_path(json.loads((Path(path) / "adapter_config.json").read_text())[
        "base_model_name_or_path"])


def train(work_dir, config_text):
    """Train in this process (as `xft train` does) and return the work dir."""
    from xft.engine.train import train as xft_train

    config = write_config(work_dir.parent, config_text, name=f"{work_dir.name}.py")
    xft_train(str(config), work_dir=str(work_dir))
    return work_dir


def tiny_config(**sections):
    lines = [f"_base_ = [{str(TINY_CONFIG)!r}]"]
    lines += [f"{key} = {value!r}" for key, value in sections.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def lora_mmengine(tmp_path_factory):
    """LoRA on MMEngine, 2 steps, a checkpoint after each."""
    return train(tmp_path_factory.mktemp("lora") / "run",
                 tiny_config(train=dict(max_steps=2, save_interval=1)))


@pytest.fixture(scope="module")
def full_trainer(tmp_path_factory):
    """Full fine-tuning on Hugging Face Trainer, 2 steps, a checkpoint after each."""
    return train(tmp_path_factory.mktemp("full") / "run",
                 tiny_config(method=dict(type="full"), optim=dict(lr=1e-3),
                             train=dict(engine="hf", max_steps=2, save_interval=1)))


@pytest.fixture(scope="module")
def qlora_trainer(tmp_path_factory):
    """QLoRA (NF4 base) on Hugging Face Trainer, 2 steps."""
    return train(tmp_path_factory.mktemp("qlora") / "run",
                 tiny_config(model=dict(quantization=dict(bits=4)),
                             train=dict(engine="hf", max_steps=2, save_interval=2)))


# ----------------------------------------------------------------------------- pth_to_hf

@pytest.mark.slow
def test_mmengine_checkpoint_becomes_an_adapter_that_stock_peft_loads(lora_mmengine, tmp_path):
    run = lora_mmengine
    run_cli("convert", "pth_to_hf", str(run.parent / "run.py"), str(run / "iter_2.pth"),
            str(tmp_path / "step2"))
    pth_to_hf(str(run.parent / "run.py"), run / "iter_1.pth", tmp_path / "step1")
    logits = stock_logits(tmp_path, {"trained": ("adapter", run / "hf"),
                                     "step2": ("adapter", tmp_path / "step2"),
                                     "step1": ("adapter", tmp_path / "step1")})
    # The last checkpoint is the trained model; the first one is another model.
    torch.testing.assert_close(logits["step2"], logits["trained"], rtol=0, atol=1e-6)
    assert (logits["step1"] - logits["trained"]).abs().max() > 1e-3
    out = tmp_path / "step2"
    assert (out / "adapter_model.safetensors").is_file()
    assert json.loads((out / "xft_meta.json").read_text())["template"] == "chatml"
    # The run's own copy also names its work dir (for --resume); otherwise the same config.
    run_config = (run / "hf" / "xft_config.py").read_text()
    assert run_config.endswith(f"work_dir = {str(run.resolve())!r}\n")
    assert (out / "xft_config.py").read_text().rstrip() == \
        run_config.rsplit("work_dir = ", 1)[0].rstrip()
    from transformers import AutoTokenizer

    chat = [{"role": "user", "content": "Who are you?"}]
    assert AutoTokenizer.from_pretrained(out).apply_chat_template(chat, tokenize=False) == \
        AutoTokenizer.from_pretrained(run / "hf").apply_chat_template(chat, tokenize=False)


@pytest.mark.slow
def test_trainer_checkpoint_becomes_a_sharded_model_that_stock_transformers_loads(
        full_trainer, tmp_path):
    run, out = full_trainer, tmp_path / "model"
    pth_to_hf(str(run.parent / "run.py"), run / "checkpoint-2", out, max_shard_size="1MB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    logits = stock_logits(tmp_path, {"trained": ("model", run / "hf"), "converted": ("model", out)})
    torch.testing.assert_close(logits["converted"], logits["trained"], rtol=0, atol=1e-6)
    assert (out / "tokenizer.json").is_file() and (out / "xft_config.py").is_file()


@pytest.mark.slow
def test_trainer_adapter_checkpoint_of_a_qlora_run_converts(qlora_trainer, tmp_path):
    run, out = qlora_trainer, tmp_path / "adapter"
    pth_to_hf(str(run.parent / "run.py"), run / "checkpoint-2", out)
    trained = load_file(str(run / "hf" / "adapter_model.safetensors"))
    converted = load_file(str(out / "adapter_model.safetensors"))
    assert converted.keys() == trained.keys()
    for key, value in trained.items():
        torch.testing.assert_close(converted[key], value, rtol=0, atol=0)


@pytest.mark.slow
def test_convert_names_what_it_cannot_read(full_trainer, lora_mmengine, tmp_path):
    (tmp_path / "work" / "empty").mkdir(parents=True)  # OUT may not be in its work dir
    with pytest.raises(XftError, match="not a checkpoint xft can read"):
        pth_to_hf(DEMO_CONFIG, tmp_path / "work" / "empty", tmp_path / "out")
    # A full-model checkpoint under a LoRA config: the config's LoRA weights are not in it.
    with pytest.raises(XftError, match=r"has no weight '.*lora_A.*', which the config trains"):
        pth_to_hf(DEMO_CONFIG, full_trainer / "checkpoint-2", tmp_path / "out")
    # A LoRA checkpoint under a full fine-tuning config.
    with pytest.raises(XftError, match="has no weight 'model.embed_tokens.weight'"):
        pth_to_hf(str(full_trainer.parent / "run.py"), lora_mmengine / "iter_2.pth",
                  tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------- merge

@pytest.mark.slow
def test_merged_qlora_adapter_gives_the_unmerged_logits(qlora_trainer, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter, out = qlora_trainer / "hf", tmp_path / "merged"
    run_cli("convert", "merge", "xft://tiny-llama", str(adapter), str(out))
    ids = torch.tensor(IDS)
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(TINY).eval()
        base_logits = base(input_ids=ids).logits
        unmerged = PeftModel.from_pretrained(base, str(adapter)).eval()(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out).eval()(input_ids=ids).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert (unmerged - base_logits).abs().max() > 1e-3  # the adapter does change the model
    assert json.loads((out / "xft_meta.json").read_text())["adapter"] is False
    assert (out / "tokenizer.json").is_file()


def tiny_llama_config(hidden=32, vocab=64, tied=False):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab,
                       tie_word_embeddings=tied)


@pytest.mark.slow
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_merge_an_adapter_that_resized_the_vocabulary(tmp_path, tied):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(tiny_llama_config(tied=tied))
    base.save_pretrained(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    model.resize_token_embeddings(72)  # 8 new tokens
    peft_model = get_peft_model(model, LoraConfig(
        r=4, target_modules="all-linear", modules_to_save=["embed_tokens", "lm_head"],
        ensure_weight_tying=tied, task_type="CAUSAL_LM"))
    with torch.no_grad():  # as if trained: non-zero B, changed embedding rows
        for name, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    peft_model.save_pretrained(tmp_path / "adapter")
    merge_adapter(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged")
    ids = torch.tensor([[1, 5, 64, 70, 71, 9]])  # old and new token ids
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
        base.resize_token_embeddings(72)
        unmerged = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()(input_ids=ids)
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(input_ids=ids)
    assert merged.logits.shape[-1] == 72
    torch.testing.assert_close(merged.logits, unmerged.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_merge_in_bf16_writes_bf16_weights_close_to_fp32(qlora_trainer, tmp_path):
    from transformers import AutoModelForCausalLM

    adapter = qlora_trainer / "hf"
    merge_adapter("xft://tiny-llama", adapter, tmp_path / "fp32")
    merge_adapter("xft://tiny-llama", adapter, tmp_path / "bf16", dtype="bf16")
    weights = load_file(str(tmp_path / "bf16" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    full = load_file(str(tmp_path / "fp32" / "model.safetensors"))
    for key, value in full.items():
        torch.testing.assert_close(weights[key].float(), value, rtol=1e-2, atol=1e-2)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert model.dtype == torch.bfloat16


@pytest.mark.slow
def test_merge_refuses_a_base_that_does_not_match(tmp_path, qlora_trainer):
    from transformers import AutoModelForCausalLM, GPT2Config

    AutoModelForCausalLM.from_config(tiny_llama_config(hidden=48, vocab=610)).save_pretrained(
        tmp_path / "wider")
    with pytest.raises(XftError, match=r"does not fit base .*'model\.layers\.0\.mlp\.down_proj' "
                                       r"takes 96 inputs in the base, 352 in the adapter"):
        merge_adapter(tmp_path / "wider", qlora_trainer / "hf", tmp_path / "out")
    AutoModelForCausalLM.from_config(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=610)) \
        .save_pretrained(tmp_path / "gpt2")
    with pytest.raises(XftError, match="the base has no module 'model.layers.0"):
        merge_adapter(tmp_path / "gpt2", qlora_trainer / "hf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------- split

@pytest.mark.slow
def test_split_reshards_and_the_weights_come_back_equal(tmp_path):
    from transformers import AutoModelForCausalLM

    from xft.tools.split import split_model

    out, messages = tmp_path / "split", []
    split_model("xft://tiny-llama", out, "300KB", log=messages.append)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and f"{len(shards)} shards" in messages[-1]
    assert shards == {p.name for p in out.glob("*.safetensors")}
    original = load_file(str(TINY / "model.safetensors"))
    assert index["weight_map"].keys() == original.keys()
    for shard in shards:
        part = load_file(str(out / shard))
        assert sum(t.numel() * t.element_size() for t in part.values()) <= 300_000 or \
            len(part) == 1  # one tensor larger than the limit gets a shard of its own
        for key, value in part.items():
            assert index["weight_map"][key] == shard
            torch.testing.assert_close(value, original[key], rtol=0, atol=0)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (TINY / name).read_bytes()
    ids = torch.tensor(IDS)
    with torch.no_grad():
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(out)(input_ids=ids).logits,
                                   AutoModelForCausalLM.from_pretrained(TINY)(input_ids=ids).logits,
                                   rtol=0, atol=0)


def test_split_names_a_bad_size_and_a_folder_without_weights(tmp_path):
    from xft.tools.split import split_model

    with pytest.raises(XftError, match="--max-shard-size '5XB'"):
        split_model("xft://tiny-llama", tmp_path / "a", "5XB")
    assert not (tmp_path / "a").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(XftError, match="holds no safetensors weights"):
        split_model(tmp_path / "empty", tmp_path / "b", "1MB")


# Trains one ZeRO-2 step with DeepSpeed's own engine on xft's model (a process of its own:
# it initialises torch.distributed), saves a DeepSpeed checkpoint and the trained weights.
DEEPSPEED_STEP = r'''
import os, sys
import torch
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[3], RANK="0", WORLD_SIZE="1",
                  LOCAL_RANK="0")
import deepspeed
from xft.config import load_config
from xft.model.build import build_model
_, experiment = load_config(sys.argv[1])
torch.manual_seed(0)
model = build_model(experiment.model, experiment.method)
deepspeed.init_distributed(dist_backend="gloo")
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config={
    "train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 2}})
ids = torch.randint(3, 600, (1, 12), generator=torch.Generator().manual_seed(0))
engine.backward(engine(input_ids=ids, labels=ids).loss)
engine.step()
engine.save_checkpoint(sys.argv[2])
torch.save({n: p.detach().clone() for n, p in engine.module.named_parameters() if p.requires_grad},
           os.path.join(sys.argv[2], "trained.pt"))
'''


@pytest.mark.slow
def test_deepspeed_checkpoint_becomes_an_adapter(tmp_path):
    pytest.importorskip("deepspeed")

    config = write_config(tmp_path, tiny_config(method=dict(dropout=0.0)))
    checkpoint = tmp_path / "work" / "ds"  # OUT may not be in the checkpoint's work dir
    result = subprocess.run([sys.executable, "-c", DEEPSPEED_STEP, str(config), str(checkpoint),
                             str(29500 + os.getpid() % 1000)],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (checkpoint / "latest").is_file()
    out = pth_to_hf(str(config), checkpoint, tmp_path / "adapter")
    trained = torch.load(checkpoint / "trained.pt")
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert len(saved) == len(trained) > 0
    for name, value in trained.items():
        key = name.replace(".default", "")
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0)
    assert any(value.abs().max() > 0 for name, value in trained.items() if "lora_B" in name)
    # One tag folder on its own (how MMEngine's DeepSpeed strategy saves iter_N.pth/).
    tag = pth_to_hf(str(config), checkpoint / "global_step1", tmp_path / "from_tag")
    from_tag = load_file(str(tag / "adapter_model.safetensors"))
    assert from_tag.keys() == saved.keys()
    for key, value in saved.items():
        torch.testing.assert_close(from_tag[key], value, rtol=0, atol=0)
