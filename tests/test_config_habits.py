"""Habits from other tools: YAML configs, bare KEY=VALUE overrides, XTuner's spellings,
the helper-name rule, the CPU hint for GPU configs."""

import pytest
from conftest import DEMO_CONFIG, run_cli

from xft.config import load_config
from xft.config.loader import find_config
from xft.errors import ConfigError
from xft.xtuner_spellings import SpellingError, translate

YAML = """\
_base_: {base}
# LLaMA-Factory-style YAML, xft's keys
train:
  max_steps: 3
  lr_scheduler: linear
method:
  r: 4
"""


def test_a_yaml_config_inherits_and_is_validated(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(YAML.format(base=find_config(DEMO_CONFIG)))
    _, exp = load_config(str(path))
    _, base = load_config(DEMO_CONFIG)
    assert (exp.train.max_steps, exp.train.lr_scheduler, exp.method.r) == (3, "linear", 4)
    assert exp.train.batch_size == base.train.batch_size and exp.datasets == base.datasets
    path.write_text(YAML.format(base=find_config(DEMO_CONFIG)) + "optim:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown config key 'optim.lrr'; "
                                          r"did you mean 'lr'\?"):
        load_config(str(path))


@pytest.mark.slow
def test_bare_overrides_after_the_config(tmp_path):
    # right after the config, and after other options too
    result = run_cli("check-dataset", DEMO_CONFIG, "data.max_length=40", "--samples", "0",
                     "--plot", str(tmp_path / "l.png"), "data.pack=True")
    # max_length 40 truncates some of the 38..56-token samples; packing into 40-token rows
    assert "truncated" in result.stdout or "dropped" in result.stdout
    assert "rows of 40 tokens" in result.stdout
    bad = run_cli("train", DEMO_CONFIG, "epochs", check=False)
    assert bad.returncode == 2 and "'epochs' is not KEY=VALUE" in bad.stderr
    bad = run_cli("train", DEMO_CONFIG, "--seed", "1", "--frobnicate", check=False)
    assert bad.returncode == 2 and "unrecognized arguments: --frobnicate" in bad.stderr


def test_xtuner_spellings_are_rewritten_with_a_note():
    argv, notes = translate(["--debug", "log-dataset", "cfg.py", "--show", "masked_text"])
    assert argv == ["--debug", "check-dataset", "cfg.py"]
    assert notes[0] == "`log-dataset` is XTuner's spelling; xft's is `xft check-dataset`"
    argv, notes = translate(["check-custom-dataset", "cfg.py"])
    assert argv == ["check-dataset", "cfg.py"] and len(notes) == 1
    argv, notes = translate(["train", "cfg.py", "--deepspeed", "deepspeed_zero2", "--nproc", "2"])
    assert argv == ["train", "cfg.py", "--deepspeed=zero2", "--nproc", "2"]
    assert notes == ["--deepspeed deepspeed_zero2 is XTuner's spelling; xft's is --deepspeed zero2"]
    assert translate(["train", "c", "--deepspeed", "zero3"])[0] == ["train", "c", "--deepspeed=zero3"]
    argv, notes = translate(["chat", "m", "--prompt-template=qwen2_chat"])
    assert argv == ["chat", "m", "--template=qwen2_chat"]
    with pytest.raises(SpellingError, match="--system 'You are"):
        translate(["chat", "m", "--system-template", "alpaca"])
    # The same word as a value is left alone
    assert translate(["chat", "log-dataset"])[0] == ["chat", "log-dataset"]


@pytest.mark.slow
def test_xtuner_spelling_on_the_command_line(tmp_path):
    result = run_cli("log-dataset", DEMO_CONFIG, "--samples", "0", "--plot",
                     str(tmp_path / "l.png"))
    assert result.stderr.startswith("xft: note: `log-dataset` is XTuner's spelling")
    assert "45 records → 45 samples" in result.stdout


def test_a_helper_without_underscore_states_the_rule(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(f"_base_ = [{str(find_config(DEMO_CONFIG))!r}]\nPROMPT = 'hi'\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'PROMPT'.*names starting with "
                                          r"'_' \(helpers: call it '_PROMPT'\)"):
        load_config(str(path))
    path.write_text(f"_base_ = [{str(find_config(DEMO_CONFIG))!r}]\n_PROMPT = 'hi'\n")
    load_config(str(path))


def test_cpu_hint_names_the_gpu_settings(monkeypatch):
    import torch

    from xft.engine.precision import cpu_hint

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, exp = load_config("qwen2_7b_instruct_qlora_alpaca_e3", data_paths=False)
    hint = cpu_hint(exp)
    assert "model.dtype='bfloat16'" in hint and "4-bit quantization" in hint
    assert "model.dtype=float32 model.quantization=None" in hint
    # the suggested overrides are accepted and leave no hint
    _, fixed = load_config("qwen2_7b_instruct_qlora_alpaca_e3",
                           {"model.dtype": "float32", "model.quantization": None},
                           data_paths=False)
    assert cpu_hint(fixed) is None
    _, tiny = load_config(DEMO_CONFIG)
    assert cpu_hint(tiny) is None


def test_a_llama_factory_yaml_points_to_the_migration_guide(tmp_path):
    path = tmp_path / "llama3_lora_sft.yaml"
    path.write_text("model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct\nstage: sft\n"
                    "finetuning_type: lora\nlora_rank: 8\n")
    with pytest.raises(ConfigError, match=r"llama3_lora_sft\.yaml: this looks like a "
                                          r"LLaMA-Factory config \(finetuning_type, "
                                          r"model_name_or_path, stage\).*docs/migrating\.md"):
        load_config(str(path))


LLAMA_FACTORY_SFT = """\
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
stage: sft
do_train: true
finetuning_type: lora
lora_target: all
dataset: identity
dataset_dir: {data_dir}
template: llama3
cutoff_len: 1024
max_samples: 20
output_dir: saves/llama3-8b/lora/sft
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
num_train_epochs: 3.0
lr_scheduler_type: cosine
bf16: true
"""


@pytest.mark.slow
def test_convert_config_turns_a_llama_factory_yaml_into_an_xft_one(tmp_path):
    import json

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "identity.json").write_text(json.dumps(
        [{"instruction": f"who {i}", "input": "", "output": "me"} for i in range(30)]))
    (data_dir / "dataset_info.json").write_text(json.dumps(
        {"identity": {"file_name": "identity.json"}}))
    src = tmp_path / "llama3_lora_sft.yaml"
    src.write_text(LLAMA_FACTORY_SFT.format(data_dir=data_dir))
    result = run_cli("convert-config", str(src), str(tmp_path / "xft.yaml"))
    assert "xft: note: do_train: not converted (xft train trains)" in result.stdout
    _, exp = load_config(str(tmp_path / "xft.yaml"))
    # LLaMA-Factory's LoRA defaults, and TrainingArguments' where the YAML says nothing
    assert (exp.method.type, exp.method.r, exp.method.alpha, exp.method.dropout,
            exp.method.target_modules) == ("lora", 8, 16, 0.0, "all-linear")
    assert (exp.optim.lr, exp.train.warmup_ratio, exp.train.log_interval) == (5e-5, 0.0, 500)
    assert (exp.train.batch_size, exp.train.grad_accum, exp.train.epochs,
            exp.train.lr_scheduler) == (1, 8, 3, "cosine")
    assert (exp.template, exp.data.max_length, exp.model.dtype) == ("llama3_chat", 1024,
                                                                   "bfloat16")
    assert exp.datasets[0].max_samples == 20 and exp.work_dir == "saves/llama3-8b/lora/sft"
    again = run_cli("convert-config", str(src), str(tmp_path / "xft.yaml"), check=False)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_the_trainer_defaults_used_are_transformers_own():
    import dataclasses

    import transformers

    from xft.tools.convert_config import TRAINER_DEFAULTS

    defaults = {f.name: f.default for f in dataclasses.fields(transformers.TrainingArguments)}
    for key, value in TRAINER_DEFAULTS.items():
        if key == "warmup_ratio":  # transformers 5 folds it into warmup_steps (0)
            assert defaults["warmup_steps"] == 0
        else:
            assert defaults[key] == value, key


def test_llama_factory_template_names_map_to_registered_templates():
    from xft.data.templates import TEMPLATES
    from xft.tools.convert_config import TEMPLATES as LLAMA_FACTORY_TEMPLATES

    assert set(LLAMA_FACTORY_TEMPLATES.values()) <= set(TEMPLATES)
    assert {LLAMA_FACTORY_TEMPLATES[n] for n in ("gemma3", "phi4", "glm4")} == {
        "gemma3", "phi4", "glm4"}


@pytest.mark.slow
def test_convert_config_refuses_preference_stages(tmp_path):
    src = tmp_path / "dpo.yaml"
    src.write_text("model_name_or_path: m\nstage: dpo\ntemplate: llama3\n")
    result = run_cli("convert-config", str(src), str(tmp_path / "x.yaml"), check=False)
    assert result.returncode == 1 and "stage: 'dpo'" in result.stderr
    assert not (tmp_path / "x.yaml").exists()


# An XTuner QLoRA config in the layout of XTuner's shipped ones (PART 1 settings, then the
# model, dataset, optimizer, scheduler and hook dicts built from them), on xft's tiny model.
XTUNER_QLORA = """\
import torch
from datasets import load_dataset
from mmengine.dataset import DefaultSampler
from mmengine.hooks import CheckpointHook, LoggerHook
from mmengine.optim import AmpOptimWrapper, CosineAnnealingLR, LinearLR
from peft import LoraConfig
from torch.optim import AdamW
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from xtuner.dataset import ConcatDataset, process_hf_dataset
from xtuner.dataset.map_fns import alpaca_map_fn, template_map_fn_factory
from xtuner.engine.hooks import EvaluateChatHook
from xtuner.engine.runner import TrainLoop
from xtuner.model import SupervisedFinetune
from xtuner.utils import PROMPT_TEMPLATE, SYSTEM_TEMPLATE

pretrained_model_name_or_path = 'xft://tiny-llama'
alpaca_path = '{data}'
prompt_template = PROMPT_TEMPLATE.qwen_chat
max_length = 512
pack_to_max_length = False
batch_size = 2
accumulative_counts = 4
max_epochs = 2
lr = 1e-4
betas = (0.9, 0.95)
weight_decay = 0.01
max_norm = 0.5
warmup_ratio = 0.05
save_steps = 100
save_total_limit = -1
evaluation_freq = 50
SYSTEM = SYSTEM_TEMPLATE.alpaca
evaluation_inputs = ['Who are you?', 'What can you do?']

tokenizer = dict(type=AutoTokenizer.from_pretrained,
                 pretrained_model_name_or_path=pretrained_model_name_or_path)
model = dict(
    type=SupervisedFinetune,
    llm=dict(type=AutoModelForCausalLM.from_pretrained,
             pretrained_model_name_or_path=pretrained_model_name_or_path,
             torch_dtype=torch.bfloat16,
             quantization_config=dict(type=BitsAndBytesConfig, load_in_4bit=True)),
    lora=dict(type=LoraConfig, r=32, lora_alpha=64, lora_dropout=0.1, task_type='CAUSAL_LM'))
alpaca = dict(type=process_hf_dataset,
              dataset=dict(type=load_dataset, path='json', data_files=alpaca_path),
              tokenizer=tokenizer, max_length=max_length, dataset_map_fn=alpaca_map_fn,
              template_map_fn=dict(type=template_map_fn_factory, template=prompt_template),
              pack_to_max_length=pack_to_max_length)
train_dataloader = dict(batch_size=batch_size, dataset=dict(type=ConcatDataset,
                                                            datasets=[alpaca]),
                        sampler=dict(type=DefaultSampler, shuffle=True))
optim_wrapper = dict(type=AmpOptimWrapper,
                     optimizer=dict(type=AdamW, lr=lr, betas=betas, weight_decay=weight_decay),
                     clip_grad=dict(max_norm=max_norm), accumulative_counts=accumulative_counts)
param_scheduler = [
    dict(type=LinearLR, start_factor=1e-5, by_epoch=True, begin=0,
         end=warmup_ratio * max_epochs, convert_to_iter_based=True),
    dict(type=CosineAnnealingLR, eta_min=0.0, by_epoch=True,
         begin=warmup_ratio * max_epochs, end=max_epochs, convert_to_iter_based=True)]
train_cfg = dict(type=TrainLoop, max_epochs=max_epochs)
custom_hooks = [dict(type=EvaluateChatHook, tokenizer=tokenizer, every_n_iters=evaluation_freq,
                     evaluation_inputs=evaluation_inputs, system=SYSTEM,
                     prompt_template=prompt_template)]
default_hooks = dict(logger=dict(type=LoggerHook, interval=5),
                     checkpoint=dict(type=CheckpointHook, by_epoch=False, interval=save_steps,
                                     max_keep_ckpts=save_total_limit))
randomness = dict(seed=7, deterministic=False)
"""


@pytest.mark.slow
def test_convert_config_reads_an_xtuner_python_config_without_running_it(tmp_path):
    import json

    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps([{"instruction": f"who {i}", "input": "", "output": "me"}
                                for i in range(6)]))
    src = tmp_path / "tiny_qlora_alpaca_e2.py"
    src.write_text(XTUNER_QLORA.format(data=data))
    result = run_cli("convert-config", str(src), str(tmp_path / "xft.yaml"))
    # xtuner is not installed: the file was read, not executed
    assert "SYSTEM_TEMPLATE.alpaca: XTuner's named system prompt" in result.stdout
    _, exp = load_config(str(tmp_path / "xft.yaml"))
    assert (exp.model.path, exp.model.dtype, exp.model.quantization.bits) == (
        "xft://tiny-llama", "bfloat16", 4)
    assert (exp.method.type, exp.method.r, exp.method.alpha, exp.method.dropout) == (
        "lora", 32, 64, 0.1)
    assert [(d.path, d.format) for d in exp.datasets] == [(str(data), "alpaca")]
    assert (exp.template, exp.data.max_length, exp.data.pack) == ("qwen2_chat", 512, False)
    assert (exp.train.batch_size, exp.train.grad_accum, exp.train.epochs) == (2, 4, 2)
    assert (exp.optim.lr, exp.optim.betas, exp.optim.weight_decay, exp.optim.max_grad_norm) \
        == (1e-4, [0.9, 0.95], 0.01, 0.5)
    assert exp.train.warmup_ratio == pytest.approx(0.05)
    assert (exp.train.save_interval, exp.train.save_total_limit, exp.train.log_interval) == (
        100, 0, 5)
    assert (exp.evaluation.prompts, exp.evaluation.interval, exp.seed) == (
        ["Who are you?", "What can you do?"], 50, 7)
    # The converted config runs: its data renders with the converted template.
    shown = run_cli("check-dataset", str(tmp_path / "xft.yaml"), "--samples", "1",
                    "--color", "never", "--plot", str(tmp_path / "l.png"),
                    "model.quantization=None", "model.dtype=float32").stdout
    assert "<|im_start|>user\nwho 0<|im_end|>" in shown


@pytest.mark.parametrize("text, says", [
    ("model = dict(type=1, llm=dict(", "not a Python config"),
    ("x = 1\n", "not an XTuner training config"),
    ("from xtuner.model import DPO\nmodel = dict(type=DPO, llm=dict("
     "pretrained_model_name_or_path='m'))\n", "model type DPO"),
])
def test_convert_config_names_what_is_not_an_xtuner_sft_config(tmp_path, text, says):
    from xft.errors import ConfigError
    from xft.tools.convert_config import convert_config

    src = tmp_path / "cfg.py"
    src.write_text(text)
    with pytest.raises(ConfigError, match=says) as refused:
        convert_config(src, tmp_path / "out.yaml")
    assert str(refused.value).startswith(str(src)) and not (tmp_path / "out.yaml").exists()
