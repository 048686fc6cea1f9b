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
    # Micro-batches the last optimizer step takes from the order of the epoch after the
    # last one: `epochs` epochs rarely fill whole accumulation windows, and rounding the
    # steps down would leave samples of the last epoch unseen.
    spill_micro_batches: int = 0

    @property
    def total_micro_batches(self):
        return self.total_steps * self.grad_accum

    def line(self):
        spill = (f"; the last step's last {self.spill_micro_batches} micro-batch(es) come from "
                 "the next epoch's order, so that every sample of every epoch is trained"
                 if self.spill_micro_batches else "")
        return (f"{self.total_steps} optimizer steps of {self.grad_accum} micro-batch(es), "
                f"{self.micro_batches_per_epoch} micro-batches an epoch{spill}")


def plan_training(num_samples, train_cfg, world_size=1):
    """The run's length. With `max_steps` it is exact; otherwise the steps that cover
    `epochs` whole epochs (RunBatchSampler continues into the next epoch's order for the
    remainder of the last accumulation window)."""
    per_epoch = math.ceil(num_samples / (train_cfg.batch_size * world_size))
    if train_cfg.max_steps:
        total, spill = train_cfg.max_steps, 0
    else:
        needed = train_cfg.epochs * per_epoch
        total = math.ceil(needed / train_cfg.grad_accum)
        spill = total * train_cfg.grad_accum - needed
    return TrainingPlan(per_epoch, total, warmup_steps_for(total, train_cfg.warmup_ratio),
                        train_cfg.grad_accum, spill)
