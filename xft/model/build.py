"""Load the tokenizer and the model a config declares, and apply the method (xft.model.methods).

Takes the config sections it needs (model, tokenizer, method), not the whole experiment.
"""

import os

import torch

from xft.console import library_progress_bars_off
from xft.errors import ConfigError, doing
from xft.model.methods import apply_method
from xft.model.quant import bitsandbytes_config, import_bitsandbytes
from xft.outputs import require_model_dir
from xft.paths import resolve_path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "auto": "auto"}


# What an objective trains (Objective.model_kind) → the transformers auto class that loads it.
MODEL_KINDS = {"causal_lm": "AutoModelForCausalLM",
               # a scalar score per sequence (reward models): one label, read by transformers
               # at each row's last non-padding token
               "sequence_classification": "AutoModelForSequenceClassification"}


def build_tokenizer(tokenizer_cfg, model_path):
    """The fast tokenizer of tokenizer.path (default: the model's path), with a pad token."""
    from transformers import AutoTokenizer

    path = resolve_path(tokenizer_cfg.path or model_path)
    with doing(f"loading the tokenizer from '{path}'"):  # anything but the errors below
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                path, trust_remote_code=tokenizer_cfg.trust_remote_code)
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


def load_causal_lm(path, dtype="float32", attn_implementation="sdpa", trust_remote_code=False,
                   quantization_config=None, kind="causal_lm", rope_scaling=None):
    import transformers

    auto_class = getattr(transformers, MODEL_KINDS[kind])
    path = resolve_path(path)
    require_model_dir(path)
    kwargs = {}
    if rope_scaling is not None:
        kwargs["config"] = scaled_rope_config(path, rope_scaling, trust_remote_code)
    if quantization_config is not None and torch.cuda.is_available():
        # bitsandbytes quantizes while placing weights: load straight onto this rank's GPU.
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    if kind == "sequence_classification":
        kwargs["num_labels"] = 1
    with doing(f"loading the model from '{path}'"):  # anything but the errors below
        try:
            with library_progress_bars_off():
                return auto_class.from_pretrained(
                    path, dtype=DTYPES[dtype], attn_implementation=attn_implementation,
                    trust_remote_code=trust_remote_code, quantization_config=quantization_config,
                    **kwargs)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load model from '{path}': {e}") from None


def scaled_rope_config(path, rope, trust_remote_code=False):
    """The model's config with its RoPE parameters set from model.rope_scaling
    (xft.config.schema.RopeScalingCfg), in transformers' `rope_parameters` form and
    checked by transformers' own RoPE validation."""
    from transformers import AutoConfig

    with doing(f"loading the model config from '{path}'"):
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    text = config.get_text_config()
    current = getattr(text, "rope_parameters", None)
    if not isinstance(current, dict) or "rope_theta" not in current:
        raise ConfigError(f"model.rope_scaling: the model at '{path}' ({config.model_type}) "
                          "has no rotary position embeddings to scale")
    if text.nested_rope_parameter_keys(current):
        raise ConfigError(f"model.rope_scaling: the model at '{path}' ({config.model_type}) "
                          "has RoPE parameters per layer type, which xft does not scale")
    params = {key: current[key] for key in ("rope_theta", "partial_rotary_factor")
              if key in current}
    params.update(rope_type=rope.type, factor=float(rope.factor))
    if rope.type in ("yarn", "llama3"):
        original = rope.original_max_position_embeddings or text.max_position_embeddings
        params["original_max_position_embeddings"] = original
        # These types describe the stretched context as max_position_embeddings (Llama 3.1:
        # 8192 pretrained, 131072 after); 'dynamic' reads it as where scaling starts.
        text.max_position_embeddings = max(text.max_position_embeddings,
                                           int(original * rope.factor))
    if rope.type == "llama3":
        params.update(low_freq_factor=rope.low_freq_factor or 1.0,
                      high_freq_factor=rope.high_freq_factor or 4.0)
    text.rope_parameters = params
    try:
        text.validate_rope()
    except (ValueError, KeyError) as e:
        raise ConfigError(f"model.rope_scaling: {e}") from None
    return config


def build_model(model_cfg, method_cfg, tokenizer=None, kind="causal_lm", log=print):
    """The model ready to train: base weights loaded (quantized for QLoRA) as the objective's
    model kind (MODEL_KINDS), embeddings resized to an extended tokenizer
    (model.resize_vocab, needs `tokenizer`), method applied."""
    cfg = model_cfg
    quantization = None
    if cfg.quantization is not None:
        quantization = bitsandbytes_config(cfg.quantization, cfg.dtype)
    else:
        import_bitsandbytes()  # before peft imports it, to keep its import quiet
    model = load_causal_lm(cfg.path, cfg.dtype, cfg.attn_implementation, cfg.trust_remote_code,
                           quantization, kind, cfg.rope_scaling)
    if kind == "sequence_classification" and tokenizer is not None:
        # transformers finds each row's last token by the pad id; a base LM often has none.
        model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.resize_vocab is None:
        return apply_method(model, method_cfg, cfg.gradient_checkpointing)
    from xft.model.resize import check_embeddings_train, resize_vocab

    if tokenizer is None:
        raise ConfigError("model.resize_vocab needs the tokenizer to resize to")
    log(resize_vocab(model, tokenizer, cfg.resize_vocab, cfg.path).line())
    model = apply_method(model, method_cfg, cfg.gradient_checkpointing)
    check_embeddings_train(model, method_cfg)
    return model


def count_parameters(model):
    if hasattr(model, "get_nb_trainable_parameters"):  # peft: counts packed 4-bit weights right
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
