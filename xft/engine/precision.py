"""Mixed precision (train.mixed_precision): autocast with fp32 master weights.

'bf16' and 'fp16' run the forward (and so the backward) under torch.autocast
while the optimizer keeps and updates float32 weights. fp16 also needs a
dynamic loss scale (torch's GradScaler), which is CUDA-only here; bf16 has
fp32's exponent range and needs none, so it also runs on CPU.

MMEngine: 'bf16' uses xft's AutocastOptimWrapper (MMEngine's AmpOptimWrapper
refuses to run without a GPU, and its GradScaler is not needed for bf16),
'fp16' uses AmpOptimWrapper (xft.engine.mmengine_model). HF Trainer:
TrainingArguments(bf16=..., fp16=...).
"""

import torch

from xft.errors import ConfigError


def check_mixed_precision_device(mixed_precision):
    """fp16 mixed precision needs CUDA: fail before anything is built."""
    if mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("'train.mixed_precision'='fp16' needs a CUDA device (dynamic loss "
                          "scaling); on CPU use 'bf16' or 'no'")


def check_master_weights(model, mixed_precision):
    """Mixed precision updates fp32 weights: every trainable parameter must be float32."""
    if mixed_precision == "no":
        return
    wrong = [(name, p.dtype) for name, p in model.named_parameters()
             if p.requires_grad and p.dtype != torch.float32]
    if wrong:
        name, dtype = wrong[0]
        raise ConfigError(
            f"'train.mixed_precision'='{mixed_precision}' keeps fp32 master weights, but "
            f"{len(wrong)} trainable parameters are {dtype} (e.g. {name}): set "
            f"model.dtype='float32', or train LoRA adapters (always float32)")


def cpu_hint(experiment):
    """A one-line note when a config carries GPU settings and no GPU is here; else None.

    Shipped configs for real models default to bf16 weights, QLoRA and large LoRA ranks,
    which on a CPU run very slowly or not at all."""
    if torch.cuda.is_available():
        return None
    model, train = experiment.model, experiment.train
    found, fixes = [], []
    if model.dtype in ("bfloat16", "float16"):
        found.append(f"model.dtype='{model.dtype}'")
        fixes.append("model.dtype=float32")
    if train.mixed_precision != "no":
        found.append(f"train.mixed_precision='{train.mixed_precision}'")
        fixes.append("train.mixed_precision=no")
    if model.quantization is not None:
        found.append(f"{model.quantization.bits}-bit quantization (bitsandbytes)")
        fixes.append("model.quantization=None")
    if not found:
        return None
    return (f"this config is set up for a GPU ({', '.join(found)}) and there is none here; "
            f"on a CPU add {' '.join(fixes)} after the config, and try a small model first "
            "(`xft list-cfg -p tiny`)")
