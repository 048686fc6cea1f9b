"""The optimizer of a run, built by xft so every engine updates the same parameters the same way.

Every parameter group carries its own `lr`: engines' schedulers scale each
group's initial lr by the same factor, so LoRA+'s ratio holds all run long.
"""

import torch


def is_loraplus_fast(name, param):
    """LoRA+'s fast group, as peft.optimizers.create_loraplus_optimizer groups it: the B
    matrices, plus every 1-D weight (biases, norms, DoRA magnitudes)."""
    return "lora_B" in name or "lora_embedding_B" in name or param.ndim == 1


def trainable_parameter_groups(model, optim_cfg, method_cfg=None):
    """Parameter groups over trainable parameters only (frozen base weights get no state)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ratio = method_cfg.loraplus_lr_ratio if method_cfg is not None else None
    if ratio is None:
        return [{"params": [p for _, p in named], "lr": optim_cfg.lr,
                 "weight_decay": optim_cfg.weight_decay}]
    base = [p for n, p in named if not is_loraplus_fast(n, p)]
    fast = [p for n, p in named if is_loraplus_fast(n, p)]
    groups = [{"params": base, "lr": optim_cfg.lr, "weight_decay": optim_cfg.weight_decay},
              {"params": fast, "lr": optim_cfg.lr * ratio, "weight_decay": optim_cfg.weight_decay}]
    return [g for g in groups if g["params"]]


def build_optimizer(model, optim_cfg, method_cfg=None):
    groups = trainable_parameter_groups(model, optim_cfg, method_cfg)
    return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas),
                             eps=optim_cfg.eps, weight_decay=optim_cfg.weight_decay)
