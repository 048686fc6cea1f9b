"""The learning-rate schedule as a factor of the peak lr, per optimizer step.

The curves are transformers' own (`transformers.get_scheduler`): one function
hands every engine the same multiplier, so both follow the same curve. xft's
names map onto transformers' schedules; each starts with a linear warmup from 0
over `warmup_steps`.
"""

import math

# config train.lr_scheduler → transformers SchedulerType
SCHEDULES = {
    "cosine": "cosine",
    "linear": "linear",
    "constant": "constant_with_warmup",
    "cosine_with_min_lr": "cosine_with_min_lr",
    "warmup_stable_decay": "warmup_stable_decay",
    "polynomial": "polynomial",
}


def lr_lambda(train_cfg, total_steps, warmup_steps, peak_lr):
    """The multiplier of each parameter group's lr at optimizer step `step` (0-based), for
    train.lr_scheduler and its options (train_cfg: xft.config.schema.TrainCfg)."""
    import torch
    from transformers import get_scheduler

    from xft.config.schema import schedule_option

    kind = train_cfg.lr_scheduler

    def option(key):
        return schedule_option(train_cfg, key)

    options = {}
    if kind == "cosine_with_min_lr":
        options = dict(min_lr_rate=option("min_lr_ratio"))
    elif kind == "warmup_stable_decay":
        options = dict(num_decay_steps=math.ceil(total_steps * option("decay_ratio")),
                       min_lr_ratio=option("min_lr_ratio"))
    elif kind == "polynomial":
        options = dict(lr_end=option("lr_end"), power=option("power"))
    # transformers builds a LambdaLR on an optimizer; a throwaway one with the peak lr
    # (polynomial reads its lr_end relative to it) yields the curve without touching the
    # run's optimizer, which each engine schedules its own way.
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak_lr)
    scheduler = get_scheduler(SCHEDULES[kind], probe, num_warmup_steps=warmup_steps,
                              num_training_steps=total_steps,
                              scheduler_specific_kwargs=options)
    return scheduler.lr_lambdas[0]


def warmup_steps_for(total_steps, warmup_ratio):
    return math.ceil(total_steps * warmup_ratio)
