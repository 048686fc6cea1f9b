"""Exported artifacts people can take anywhere: an adapter after a vocabulary resize holds
each embedding matrix once and gives PEFT's unmerged logits when stock peft loads it; the
embedded tiny model is named portably; merge keeps the base's dtype and shards by default;
pth_to_hf reads a Trainer checkpoint through the model's own key mapping (GPT-NeoX saves
its head as `embed_out`); every export has a model card."""

import json
import shutil

import pytest
import torch
from conftest import REPO
from safetensors.torch import load_file
from test_convert import stock_logits, tiny_config, train

from xft.data.templates import get_template
from xft.engine.export import export_hf
from xft.tools.merge import merge_adapter
from xft.tools.pth_to_hf import pth_to_hf

TINY = REPO / "xft" / "assets" / "tiny-llama"
HIDDEN = 32


def tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY)


def small_llama(vocab, tied, dtype=torch.float32):
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab,
                         tie_word_embeddings=tied)
    return AutoModelForCausalLM.from_config(config).to(dtype)


def perturb_trainable(model):
    """As if trained: non-zero LoRA B matrices, changed embedding rows."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.slow
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_adapter_after_a_vocabulary_resize_stores_each_matrix_once_and_loads_in_stock_peft(
        tmp_path, tied):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer()  # 610 tokens: 10 more than the base's rows
    small_llama(600, tied).save_pretrained(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model = perturb_trainable(get_peft_model(model, LoraConfig(
        r=4, target_modules="all-linear", modules_to_save=["embed_tokens", "lm_head"],
        ensure_weight_tying=tied, task_type="CAUSAL_LM")))
    ids = [[1, 5, 64, 600, 605, 609, 9]]  # old and new token ids
    with torch.no_grad():
        unmerged = model.eval()(input_ids=torch.tensor(ids)).logits
    export_hf(model, tokenizer, get_template("chatml", tokenizer), tmp_path / "adapter")
    weights = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    full = sorted(k for k, v in weights.items() if v.shape == (len(tokenizer), HIDDEN))
    # One matrix per module (peft's default wrote three each: copy, original, base layer).
    # Tied, the head's name holds the same values: stock peft needs both names.
    assert full == ["base_model.model.lm_head.weight", "base_model.model.model.embed_tokens.weight"]
    if tied:
        torch.testing.assert_close(*[weights[k] for k in full], rtol=0, atol=0)
    logits = stock_logits(tmp_path, {"adapter": ("adapter", tmp_path / "adapter")}, ids)
    torch.testing.assert_close(logits["adapter"], unmerged, rtol=1e-5, atol=1e-5)
    # xft's own loaders read the leaner adapter too: merge resizes the base to it.
    merge_adapter(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged")
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(
            input_ids=torch.tensor(ids)).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_the_embedded_tiny_model_is_named_portably_and_still_loads(tmp_path):
    from peft import LoraConfig, get_peft_model

    from xft.model.build import load_causal_lm
    from xft.tools.chat import ChatSession, load_chat_model

    tokenizer = tiny_tokenizer()
    model = perturb_trainable(get_peft_model(load_causal_lm("xft://tiny-llama"), LoraConfig(
        r=4, target_modules="all-linear", task_type="CAUSAL_LM")))
    export_hf(model, tokenizer, get_template("chatml", tokenizer), tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "xft://tiny-llama"
    assert str(REPO) not in (tmp_path / "adapter" / "adapter_config.json").read_text()
    # xft resolves the name wherever it is installed: chat and merge load the adapter.
    loaded, tok, template = load_chat_model(str(tmp_path / "adapter"))
    ids = torch.tensor([[1, 17, 250, 3]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert ChatSession(loaded, tok, template, max_new_tokens=2).ask("Hi") is not None
    merge_adapter("xft://tiny-llama", tmp_path / "adapter", tmp_path / "merged")
    # Without xft, the base is the folder the model card names; loaded from there, stock
    # peft gives what xft's loader gives.
    logits = stock_logits(tmp_path, {"adapter": ("adapter", tmp_path / "adapter")},
                          ids.tolist())
    with torch.no_grad():
        torch.testing.assert_close(logits["adapter"], model(input_ids=ids).logits)


@pytest.mark.slow
def test_merge_keeps_the_bases_dtype_and_shards_by_default(tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import xft.engine.export as export

    small_llama(610, tied=False, dtype=torch.bfloat16).save_pretrained(tmp_path / "base")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    perturb_trainable(get_peft_model(base, LoraConfig(
        r=4, target_modules="all-linear", task_type="CAUSAL_LM"))).save_pretrained(
        tmp_path / "adapter")
    monkeypatch.setattr(export, "DEFAULT_SHARD_SIZE", "40KB")  # what merge uses unless told
    merge_adapter(tmp_path / "base", tmp_path / "adapter", tmp_path / "merged")
    index = json.loads((tmp_path / "merged" / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1
    dtypes = {t.dtype for f in files for t in load_file(str(tmp_path / "merged" / f)).values()}
    assert dtypes == {torch.bfloat16}  # the base's, not fp32 (twice the size)
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "merged").dtype == torch.bfloat16


def save_base(folder, config):
    """A tiny model of `config` with xft's tokenizer, as a local base model folder."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TINY / name, folder / name)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt_neox", "llama_untied"])
def test_pth_to_hf_reads_a_trainer_checkpoint_through_the_models_own_key_mapping(tmp_path,
                                                                              arch):
    from transformers import GPTNeoXConfig, LlamaConfig

    if arch == "gpt_neox":  # saves its head as 'embed_out'; the class calls it 'lm_head'
        config = GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, vocab_size=610)
    else:  # the untied half of the pair; tiny-llama (tied) is test_convert's full_trainer
        config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, vocab_size=610,
                             tie_word_embeddings=False)
    base = save_base(tmp_path / "base", config)
    run = train(tmp_path / "run", tiny_config(
        model=dict(path=str(base)), method=dict(type="full"), optim=dict(lr=1e-3),
        train=dict(engine="hf", max_steps=2, save_interval=2, batch_size=2, epochs=1)))
    pth_to_hf(str(tmp_path / "run.py"), run / "checkpoint-2", tmp_path / "converted")
    logits = stock_logits(tmp_path, {"trained": ("model", run / "hf"),
                                     "converted": ("model", tmp_path / "converted"),
                                     "base": ("model", base)})
    torch.testing.assert_close(logits["converted"], logits["trained"], rtol=0, atol=1e-6)
    assert (logits["converted"] - logits["base"]).abs().max() > 1e-3  # it did train


@pytest.mark.slow
def test_every_export_has_a_model_card_with_base_data_method_template_and_metrics(tmp_path):
    run = train(tmp_path / "run", tiny_config(train=dict(max_steps=2, save_interval=1,
                                                         log_interval=1)))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    card = (run / "hf" / "README.md").read_text()
    assert "More Information Needed" not in card  # not peft's template
    for fact in ("`xft://tiny-llama`", "LoRA r=32 alpha=64 on all-linear",
                 "xft://data/self_cognition.json (alpaca", "`chatml`",
                 f"step 2: loss {records[-1]['loss']:.4g}", "mmengine, AdamW, lr"):
        assert fact in card, (fact, card)
    # A converted checkpoint's card has the metrics up to its step.
    pth_to_hf(str(tmp_path / "run.py"), run / "iter_1.pth", tmp_path / "step1")
    step1 = next(r for r in records if r["step"] == 1)
    assert f"step 1: loss {step1['loss']:.4g}" in (tmp_path / "step1" / "README.md").read_text()
    # The merged model's card says what was merged into what.
    merge_adapter("xft://tiny-llama", run / "hf", tmp_path / "merged")
    merged = (tmp_path / "merged" / "README.md").read_text()
    assert "merged into the base weights (xft://tiny-llama, float32)" in merged
    assert "library_name: transformers" in merged and "`chatml`" in merged
