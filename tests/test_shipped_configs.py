"""Every shipped config (`xft list-cfg`, future ones included) validates and trains two steps.

Nothing can be downloaded here, so each config runs with its hub ids replaced:
- model.path → a tiny random model (hidden size 64, 2 layers) of the same transformers
  architecture class as the family's real model (ARCHITECTURES below, keyed by hub id prefix);
- tokenizer.path → xft's tiny byte-level BPE carrying the config template's special tokens
  (the tokenizers that test_templates.py checks each template against);
- datasets → a small file in each dataset's format, written here;
- model.dtype float32 (CPU), train.max_steps=2, one sample per step. model.quantization is
  kept: bitsandbytes runs 4/8-bit layers on CPU.

InternLM2 and ChatGLM3 ship their modelling code in their hub repositories (trust_remote_code),
which cannot be fetched here. They train on the closest stock architecture instead: InternLM2 is
the Llama architecture with fused, renamed weights (LlamaForCausalLM), ChatGLM3 is the GLM
architecture that transformers ships for GLM-4 (GlmForCausalLM). Their configs' template,
tokenizer special tokens, method and data are exercised as shipped; their real modelling code
is not.
"""

import json
import math

import pytest
import torch
from test_templates import FAMILY_TOKENS, family_tokenizer
from transformers import (AutoModelForCausalLM, GemmaConfig, GlmConfig, LlamaConfig,
                          MistralConfig, Phi3Config, Qwen2Config)

from xft.config import list_configs, load_config
from xft.config.loader import config_text, load_raw_config
from xft.config.schema import validate
from xft.data.formats import FORMATS
from xft.data.formats.preference import PAIR_FORMATS, UNPAIRED_FORMATS
from conftest import build_dataset, make_tiny_reward_model
from xft.data.templates import TEMPLATES, get_template
from xft.engine.builder import build_experiment
from xft.engine.mmengine_run import run as run_mmengine
from xft.engine.monitor import METRICS_FILE
from xft.model.build import build_tokenizer

CONFIGS = list_configs()

# Hub id prefix → the transformers config class of that model's architecture.
ARCHITECTURES = {
    "Qwen/Qwen2-": Qwen2Config,
    "meta-llama/": LlamaConfig,
    "mistralai/Mistral-": MistralConfig,
    "HuggingFaceH4/zephyr-": MistralConfig,
    "01-ai/Yi-": LlamaConfig,
    "deepseek-ai/deepseek-llm-": LlamaConfig,
    "lmsys/vicuna-": LlamaConfig,
    "google/gemma-": GemmaConfig,
    "microsoft/Phi-3-": Phi3Config,
    "internlm/internlm2-": LlamaConfig,  # stand-in: the real class is remote code
    "THUDM/chatglm3-": GlmConfig,  # stand-in: the real class is remote code
    # Stage 2 of the incremental pretraining pipeline starts from stage 1's merged model.
    "work_dirs/mistral_7b_v0_3_zh_vocab": MistralConfig,
}
EMBEDDED = "xft://"  # xft's own tiny model: it runs as shipped
# Templates tested with another family's tokenizer, as in test_templates.py (mistral_v3 shares
# Mistral's BOS/EOS; its real tokenizer is checked in test_templates_real.py).
TOKENIZER_OF = {"mistral_v3": "mistral"}

# Small records of each format (a few per file, so a 2-sample step always has data).
RECORDS = {
    "qa": [{"question": "2+3=", "answer": "5"}, {"question": "1+1=", "answer": "2"}],
    "alpaca": [{"instruction": "Name a fish.", "input": "", "output": "Tuna."},
               {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}],
    "alpaca_zh": [{"instruction_zh": "说出一种鱼。", "input_zh": "", "output_zh": "金枪鱼。"},
                  {"instruction_zh": "把数字相加。", "input_zh": "2 和 3", "output_zh": "5"}],
    "openai": [{"messages": [{"role": "user", "content": "Who are you?"},
                             {"role": "assistant", "content": "I am Tuna."}]},
               {"messages": [{"role": "user", "content": "hi"},
                             {"role": "assistant", "content": "Hello!"},
                             {"role": "user", "content": "Count to 3."},
                             {"role": "assistant", "content": "1, 2, 3."}]}],
    "guanaco": [{"text": "### Human: What is a monopsony?### Assistant: A market with one buyer."},
                {"text": "### Human: Hi### Assistant: Hello!### Human: Bye### Assistant: Bye!"}],
    # A plugin call without thoughts: qwen2_chat, paired with moss, must render the tool call.
    "moss": [{"meta_instruction": "You are MOSS.\n- Inner thoughts: disabled.\n"
                                  "- Calculator: enabled. API: Calculate(expression)\n",
              "num_turns": 1,
              "chat": {"turn_1": {
                  "Human": "<|Human|>: What is 2+3?<eoh>\n",
                  "Inner Thoughts": "<|Inner Thoughts|>: None<eot>\n",
                  "Commands": "<|Commands|>: Calculate(\"2+3\")<eoc>\n",
                  "Tool Responses": "<|Results|>:\nCalculate(\"2+3\") => '5'\n<eor>\n",
                  "MOSS": "<|MOSS|>: It is 5.<eom>\n"}}},
             {"meta_instruction": "You are MOSS.\n- Inner thoughts: disabled.\n",
              "num_turns": 1,
              "chat": {"turn_1": {
                  "Human": "<|Human|>: Hello<eoh>\n",
                  "Inner Thoughts": "<|Inner Thoughts|>: None<eot>\n",
                  "Commands": "<|Commands|>: None<eoc>\n",
                  "Tool Responses": "<|Results|>: None<eor>\n",
                  "MOSS": "<|MOSS|>: Hello! How can I help?<eom>\n"}}}],
    "pretrain": [{"text": "Once upon a time a tuna swam across the sea."},
                 {"text": "The sea was wide, and the tuna was small."}],
    # Preference pairs, implicit prompt (as trl-lib/ultrafeedback_binarized).
    "trl_pairs": [{"chosen": [{"role": "user", "content": "Name a fish."},
                              {"role": "assistant", "content": "Tuna."}],
                   "rejected": [{"role": "user", "content": "Name a fish."},
                                {"role": "assistant", "content": "A cat."}]},
                  {"chosen": [{"role": "user", "content": "2 + 3?"},
                              {"role": "assistant", "content": "5"}],
                   "rejected": [{"role": "user", "content": "2 + 3?"},
                                {"role": "assistant", "content": "23"}]}],
    # Unpaired labelled replies (as trl-lib/kto-mix-14k); KTO's batches mix both labels.
    "kto": [{"prompt": [{"role": "user", "content": "Name a fish."}],
             "completion": [{"role": "assistant", "content": "Tuna."}], "label": True},
            {"prompt": [{"role": "user", "content": "2 + 3?"}],
             "completion": [{"role": "assistant", "content": "23"}], "label": False}],
}


def architecture(model_path):
    for prefix, config_class in ARCHITECTURES.items():
        if model_path.startswith(prefix):
            return config_class
    raise AssertionError(f"no tiny architecture for '{model_path}': add its hub id prefix and "
                         "transformers config class to ARCHITECTURES in this test")


class TinyAssets:
    """Tiny models, tokenizers and data files, each built once on first use."""

    def __init__(self, root):
        self.root = root
        self.cache = {}
        # One vocabulary size fits every family's tokenizer (base BPE + its special tokens).
        self.vocab_size = max(len(family_tokenizer(name)) for name in FAMILY_TOKENS)

    def _once(self, key, build):
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    def model(self, config_class):
        def build():
            config = config_class(
                vocab_size=self.vocab_size, hidden_size=64, intermediate_size=128,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                max_position_embeddings=512, bos_token_id=0, eos_token_id=1, pad_token_id=1)
            torch.manual_seed(0)
            path = self.root / f"model_{config_class.model_type}"
            AutoModelForCausalLM.from_config(config).save_pretrained(path)
            return str(path)
        return self._once(("model", config_class), build)

    def tokenizer(self, template):
        family = TOKENIZER_OF.get(template, template)
        assert family in FAMILY_TOKENS, f"no test tokenizer for template '{template}'"

        def build():
            path = self.root / f"tokenizer_{family}"
            family_tokenizer(family).save_pretrained(path)
            return str(path)
        return self._once(("tokenizer", family), build)

    def reward_model(self):
        return self._once(("reward_model",),
                          lambda: str(make_tiny_reward_model(self.root / "reward_model")))

    def data(self, fmt):
        def build():
            path = self.root / f"{fmt}.jsonl"
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                    for r in RECORDS[fmt]), encoding="utf-8")
            return str(path)
        return self._once(("data", fmt), build)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return TinyAssets(tmp_path_factory.mktemp("tiny_assets"))


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_config_trains_two_steps_on_a_tiny_model_of_its_architecture(name, assets, tmp_path):
    # As shipped, its data paths are the user's to fill and a later pipeline stage's model
    # is an earlier stage's output: validated, not path-checked.
    shipped = validate(load_raw_config(name).to_dict())
    overrides = {"train.max_steps": 2, "train.batch_size": 1, "train.grad_accum": 1,
                 "train.log_interval": 1}
    config_class = None
    if not shipped.model.path.startswith(EMBEDDED):
        config_class = architecture(shipped.model.path)
        overrides.update({
            "model.path": assets.model(config_class), "model.dtype": "float32",
            "tokenizer.path": assets.tokenizer(shipped.template),
            "datasets": [dict(path=assets.data(ds.format), format=ds.format)
                         for ds in shipped.datasets]})
        if shipped.model.resize_vocab is not None:
            # The stand-in tokenizer is its own base: the resize path runs, adding no rows
            # (tests/test_vocab.py checks real extensions).
            overrides["model.resize_vocab.base_tokenizer"] = overrides["tokenizer.path"]
    rewards = (shipped.objective.options.__dict__.get("rewards") or []) \
        if shipped.objective.options is not None else []
    if any(r.get("type") == "reward_model" for r in rewards):  # a later stage's output
        overrides["objective.rewards"] = [
            {**r, "path": assets.reward_model()} if r.get("type") == "reward_model" else r
            for r in rewards]
    cfg, experiment = load_config(name, overrides, data_paths=False)
    assert experiment.model.quantization == shipped.model.quantization
    assert experiment.method == shipped.method and experiment.template == shipped.template

    built = build_experiment(experiment, config_text(cfg), tmp_path, log=lambda *_: None)
    if config_class is not None:
        base = built.model.get_base_model() if hasattr(built.model, "get_base_model") \
            else built.model
        assert base.config.model_type == config_class.model_type
    if shipped.model.quantization is not None:
        import bitsandbytes as bnb

        layer = {4: bnb.nn.Linear4bit, 8: bnb.nn.Linear8bitLt}[shipped.model.quantization.bits]
        assert any(isinstance(m, layer) for m in built.model.modules())
    hf_dir = run_mmengine(built)

    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).open()]
    objective = built.objective
    if experiment.val_datasets or experiment.data.test_size is not None:
        # A config with a validation set evaluates after the last step.
        evals = [r for r in records if objective.validation_key in r]
        assert [r["step"] for r in evals] == [2]
        assert math.isfinite(evals[0][objective.validation_key])
    records = [r for r in records if "loss" in r]  # the training records
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert math.isfinite(r["loss"]) and r[objective.count_key] > 0
        if config_class is not None and objective.name == "sft":
            # A random tiny model predicts close to uniformly: loss ≈ ln(vocabulary size).
            assert abs(r["loss"] - math.log(assets.vocab_size)) < 1.0, r
    whole = shipped.method.type == "full" or objective.model_kind != "causal_lm"
    artifact = "model.safetensors" if whole else "adapter_model.safetensors"
    assert (hf_dir / artifact).is_file() and (hf_dir / "tokenizer.json").is_file()


def _families():
    """template → {method ('qlora' for lora + quantization): configs}, over shipped configs."""
    families = {}
    for name in CONFIGS:
        cfg = load_raw_config(name)
        method = cfg.method.get("type", "lora")
        if method == "lora" and cfg.model.get("quantization"):
            method = "qlora"
        families.setdefault(cfg.template, {}).setdefault(method, []).append(name)
    return families


@pytest.mark.slow
def test_every_chat_family_has_lora_and_qlora_configs():
    families = _families()
    # moss is MOSS-003's data format; no config ships MOSS's own (remote-code) models yet.
    # The thinking families (qwen3, deepseek_r1) are new this round: no configs ship yet; nor
    # for mistral_v7 (Mistral Small 3.2's checkpoint is a vision-language model, not tried),
    # gemma3, phi4 and glm4 (templates added without their models' checkpoints at hand).
    chat_templates = set(TEMPLATES) - {"default", "alpaca", "chatml", "auto", "moss", "qwen3",
                                       "qwen3_keep_thinking", "deepseek_r1", "mistral_v7",
                                       "gemma3", "phi4", "glm4"}
    for template in sorted(chat_templates):
        methods = families.get(template, {})
        assert methods.get("lora") and methods.get("qlora"), (template, methods)


@pytest.mark.slow
def test_every_dataset_format_of_the_matrix_is_used():
    used = {ds["format"] for name in CONFIGS for ds in load_raw_config(name).datasets}
    known = set(FORMATS) | set(PAIR_FORMATS) | set(UNPAIRED_FORMATS)
    assert set(RECORDS) <= used <= known, used


# Real public files in each dataset format (shared/data; see its MANIFEST.md), and the
# records known to be bad in them (OpenAI's cookbook file has 3 replies no user prompts).
REAL_DATA = {"alpaca": ("datasets/alpaca/alpaca_en_demo.json", 0),
             "alpaca_zh": ("datasets/alpaca/alpaca_zh_demo.json", 0),
             "openai": ("datasets/openai/toy_chat_fine_tuning.jsonl", 3),
             "moss": ("datasets/moss/moss_003_sft_no_plugins_sample.jsonl", 0),
             "pretrain": ("datasets/pretrain/c4_demo.jsonl", 0)}


@pytest.mark.parametrize("fmt", sorted(REAL_DATA))
@pytest.mark.slow
def test_configs_of_each_dataset_format_read_real_data(fmt, shared_data, assets):
    """The first config using each format builds its data from a real file of that format
    with its own template, refusing none of the first 60 records but the known bad ones."""
    name = next(n for n in CONFIGS
                if any(ds["format"] == fmt for ds in load_raw_config(n).datasets))
    path, known_bad = REAL_DATA[fmt]
    _, experiment = load_config(name, {
        "datasets": [dict(path=str(shared_data / path), format=fmt, max_samples=60)],
        "tokenizer.path": assets.tokenizer(load_raw_config(name).template),
        "data.on_bad_record": "skip", "data.max_length": 4096})
    tokenizer = build_tokenizer(experiment.tokenizer, experiment.model.path)
    template = get_template(experiment.template, tokenizer, experiment.data.train_on)
    dataset, data_report = build_dataset(experiment, tokenizer, template, log=lambda *_: None)
    (report,) = data_report.sources
    assert report.skipped_bad == known_bad
    assert len(dataset) > 0
