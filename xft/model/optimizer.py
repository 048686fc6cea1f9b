"""The optimizer of a run, built by xft so every engine updates the same parameters the same way.

Every parameter group carries its own `lr`: engines' schedulers scale each
group's initial lr by the same factor, so LoRA+'s ratio holds all run long.
Optimizers come from the libraries that make them: torch (AdamW), bitsandbytes
(8-bit and paged AdamW), transformers (Adafactor), galore-torch (GaLore).
"""

import torch


def is_loraplus_fast(name, param):
    """LoRA+'s fast group, as peft.optimizers.create_loraplus_optimizer groups it: the B
    matrices, plus every 1-D weight (biases, norms, DoRA magnitudes)."""
    return "lora_B" in name or "lora_embedding_B" in name or param.ndim == 1


# Parameter names weight decay skips, as transformers' Trainer matches them (regexes).
NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


def decayed_names(model):
    """Names of the parameters weight decay applies to: not biases, not norm weights (the
    convention of transformers' Trainer, through its own helper)."""
    from transformers.trainer_pt_utils import get_parameter_names

    return set(get_parameter_names(model, [torch.nn.LayerNorm], NO_DECAY_PATTERNS))


def with_decay_split(groups, model):
    """Each group split in two, the second without weight decay (biases, norms); groups
    are left whole when they have no decay, so their layout is the same as ever."""
    if not any(g["weight_decay"] for g in groups):
        return groups
    decayed = {id(p) for n, p in model.named_parameters() if n in decayed_names(model)}
    split = []
    for group in groups:
        split.append({**group, "params": [p for p in group["params"] if id(p) in decayed]})
        split.append({**group, "params": [p for p in group["params"] if id(p) not in decayed],
                      "weight_decay": 0.0})
    return [g for g in split if g["params"]]


def trainable_parameter_groups(model, optim_cfg, method_cfg=None):
    """Parameter groups over trainable parameters only (frozen base weights get no state)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ratio = method_cfg.loraplus_lr_ratio if method_cfg is not None else None
    if ratio is None:
        groups = [{"params": [p for _, p in named], "lr": optim_cfg.lr,
                   "weight_decay": optim_cfg.weight_decay}]
    else:
        base = [p for n, p in named if not is_loraplus_fast(n, p)]
        fast = [p for n, p in named if is_loraplus_fast(n, p)]
        groups = [g for g in ({"params": base, "lr": optim_cfg.lr,
                               "weight_decay": optim_cfg.weight_decay},
                              {"params": fast, "lr": optim_cfg.lr * ratio,
                               "weight_decay": optim_cfg.weight_decay}) if g["params"]]
    return with_decay_split(groups, model)


def galore_parameter_groups(model, optim_cfg):
    """GaLore's groups: the trainable 2-D weights of modules named by
    `galore.target_modules` carry the projection settings; the rest train plainly."""
    galore = optim_cfg.galore
    projected, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        targeted = param.ndim == 2 and any(t in name for t in galore.target_modules) \
            and "embed" not in name and "lm_head" not in name
        (projected if targeted else plain).append(param)
    if not projected:
        from xft.errors import ConfigError

        raise ConfigError(f"'optim.galore.target_modules' {galore.target_modules} match no "
                          "trainable 2-D weight of the model")
    group = {"lr": optim_cfg.lr, "weight_decay": optim_cfg.weight_decay}
    plain = with_decay_split([{"params": plain, **group}], model) if plain else []
    return plain + [{"params": projected, **group, "rank": galore.rank,
                     "update_proj_gap": galore.update_proj_gap, "scale": galore.scale,
                     "proj_type": galore.proj_type}]


def build_optimizer(model, optim_cfg, method_cfg=None):
    """The configured optimizer over the model's trainable parameters (optim.type)."""
    kind = optim_cfg.type
    if kind.startswith("GaLore"):
        groups = galore_parameter_groups(model, optim_cfg)
    else:
        groups = trainable_parameter_groups(model, optim_cfg, method_cfg)
    adam = dict(lr=optim_cfg.lr, betas=tuple(optim_cfg.betas), eps=optim_cfg.eps,
                weight_decay=optim_cfg.weight_decay)
    if kind == "AdamW":
        return torch.optim.AdamW(groups, **adam)
    if kind in ("AdamW8bit", "PagedAdamW", "PagedAdamW8bit"):
        try:
            import bitsandbytes as bnb
        except ImportError:
            from xft.errors import ConfigError

            raise ConfigError(f"optim.type='{kind}' needs bitsandbytes: pip install "
                              "'xft[qlora]'") from None

        return getattr(bnb.optim, kind)(groups, **adam)
    # Adafactor with an external lr: relative_step and parameter scaling off, so the
    # schedule and lr of the config apply as for every other optimizer.
    adafactor = dict(lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay,
                     scale_parameter=False, relative_step=False, warmup_init=False)
    if kind == "Adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, **adafactor)
    try:
        import galore_torch
    except ImportError:
        from xft.errors import ConfigError

        raise ConfigError(f"optim.type='{kind}' needs the galore-torch package: "
                          "pip install 'xft[galore]'") from None
    if kind == "GaLoreAdafactor":
        return galore_torch.GaLoreAdafactor(groups, **adafactor)
    return getattr(galore_torch, kind)(groups, **adam)
