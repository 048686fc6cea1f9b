"""Load the tokenizer and the model a config declares, and apply the method (full / LoRA)."""

import torch

from xft.errors import ConfigError
from xft.paths import resolve_path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "auto": "auto"}


def build_tokenizer(experiment):
    from transformers import AutoTokenizer

    path = resolve_path(experiment.tokenizer.path or experiment.model.path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, trust_remote_code=experiment.tokenizer.trust_remote_code)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load tokenizer from '{path}': {e}") from None
    if not tokenizer.is_fast:
        raise ConfigError(f"tokenizer at '{path}' is not a fast tokenizer; xft needs character "
                          "offsets to place labels")
    if tokenizer.pad_token_id is None:
        # Labels come from template spans, not from token ids, so padding with EOS
        # never masks a trained EOS.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path, dtype="float32", attn_implementation="sdpa", trust_remote_code=False):
    from transformers import AutoModelForCausalLM

    path = resolve_path(path)
    try:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=DTYPES[dtype], attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load model from '{path}': {e}") from None


def build_model(experiment):
    """The model ready to train: base weights loaded, method applied."""
    cfg = experiment.model
    model = load_causal_lm(cfg.path, cfg.dtype, cfg.attn_implementation, cfg.trust_remote_code)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    method = experiment.method
    if method.type == "lora":
        from peft import LoraConfig, get_peft_model

        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
        lora = LoraConfig(r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout,
                          target_modules=method.target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    return model


def count_parameters(model):
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
