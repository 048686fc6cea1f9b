"""The optimizer of a run, built by xft so every engine updates the same parameters the same way."""

import torch


def trainable_parameter_groups(model, optim_cfg):
    """Parameter groups over trainable parameters only (frozen base weights get no state)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": params, "lr": optim_cfg.lr, "weight_decay": optim_cfg.weight_decay}]


def build_optimizer(model, optim_cfg):
    groups = trainable_parameter_groups(model, optim_cfg)
    return torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas),
                             eps=optim_cfg.eps, weight_decay=optim_cfg.weight_decay)
