"""How long a run is: micro-batches per epoch, optimizer steps, warmup."""

import math
from dataclasses import dataclass

from xft.engine.schedule import warmup_steps_for


@dataclass(frozen=True)
class TrainingPlan:
    micro_batches_per_epoch: int
    total_steps: int  # optimizer steps
    warmup_steps: int
    grad_accum: int

    @property
    def total_micro_batches(self):
        return self.total_steps * self.grad_accum


def plan_training(num_samples, train_cfg, world_size=1):
    per_epoch = math.ceil(num_samples / (train_cfg.batch_size * world_size))
    steps_per_epoch = max(1, per_epoch // train_cfg.grad_accum)
    total = train_cfg.max_steps or train_cfg.epochs * steps_per_epoch
    return TrainingPlan(per_epoch, total, warmup_steps_for(total, train_cfg.warmup_ratio),
                        train_cfg.grad_accum)
