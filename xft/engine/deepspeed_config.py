"""`--deepspeed NAME|FILE`: a DeepSpeed config whose "auto" values come from the xft config.

xft ships zero1, zero2, zero2_offload, zero3 and zero3_offload (configs/deepspeed/*.json).
The xft config decides the batch layout, clipping and precision, because the data
sampler, the training plan and the loss normalisation are built from it; so
these keys are always set from it:

    train_micro_batch_size_per_gpu   train.batch_size
    gradient_accumulation_steps      train.grad_accum
    train_batch_size                 batch_size × grad_accum × world size
    gradient_clipping                optim.max_grad_norm (0: no clipping)
    bf16.enabled / fp16.enabled      train.mixed_precision, else model.dtype

"auto" is replaced silently; an explicit value that differs is replaced with a
warning. The optimizer and lr schedule are xft's own (the same on every
engine), so a JSON's "optimizer"/"scheduler" sections are dropped with a warning.
"""

import difflib
import json
from pathlib import Path

from xft.errors import ConfigError

SHIPPED = ("zero1", "zero2", "zero2_offload", "zero3", "zero3_offload")


def shipped_path(name):
    from xft.config.loader import configs_root

    return configs_root() / "deepspeed" / f"{name}.json"


def load_deepspeed_json(spec):
    """(dict, where it came from) for a shipped name or a JSON file path."""
    path = Path(spec)
    if spec in SHIPPED:
        path = shipped_path(spec)
    elif path.suffix != ".json" or not path.is_file():
        close = difflib.get_close_matches(str(spec), SHIPPED, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"--deepspeed {spec}: neither a shipped config ({', '.join(SHIPPED)}) "
                          f"nor an existing .json file{hint}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a DeepSpeed config must be a JSON object")
    return raw, path


def precision_flags(model_dtype, mixed_precision="no"):
    """(bf16, fp16) for DeepSpeed: train.mixed_precision when set, else from model.dtype
    ('auto' means bf16 where CUDA supports it)."""
    if mixed_precision != "no":
        return mixed_precision == "bf16", mixed_precision == "fp16"
    if model_dtype == "auto":
        import torch

        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return bf16, False
    return model_dtype == "bfloat16", model_dtype == "float16"


def resolve_deepspeed_config(spec, experiment, world_size=None, warn=print):
    """The DeepSpeed config dict for this run, every value xft decides filled in."""
    from xft.engine import distributed

    raw, source = load_deepspeed_json(spec)
    config = json.loads(json.dumps(raw))  # a deep copy we may edit
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"{source}: zero_optimization.stage must be 0-3, got {stage!r}")
    for section in ("optimizer", "scheduler"):
        if config.pop(section, None) is not None:
            warn(f"xft: warning: {source}: ignoring its '{section}' section; xft builds the "
                 f"optimizer and lr schedule from the config (optim, train)")
    train, optim = experiment.train, experiment.optim
    world_size = distributed.world_size() if world_size is None else world_size
    bf16, fp16 = precision_flags(experiment.model.dtype, train.mixed_precision)
    values = {
        ("train_micro_batch_size_per_gpu",): (train.batch_size, "train.batch_size"),
        ("gradient_accumulation_steps",): (train.grad_accum, "train.grad_accum"),
        ("train_batch_size",): (train.batch_size * train.grad_accum * world_size,
                                f"train.batch_size × train.grad_accum × {world_size} processes"),
        ("gradient_clipping",): (float(optim.max_grad_norm or 0.0), "optim.max_grad_norm"),
        ("bf16", "enabled"): (bf16, "train.mixed_precision / model.dtype"),
        ("fp16", "enabled"): (fp16, "train.mixed_precision / model.dtype"),
    }
    for keys, (value, origin) in values.items():
        _fill(config, keys, value, origin, source, warn)
    return config


def _fill(config, keys, value, origin, source, warn):
    *parents, last = keys
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    current = node.get(last, "auto")
    if current != "auto" and current != value:
        warn(f"xft: warning: {source}: '{'.'.join(keys)}' is {current!r} but the config gives "
             f"{value!r} ({origin}); using {value!r}")
    node[last] = value
