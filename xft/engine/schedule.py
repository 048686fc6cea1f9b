"""The learning-rate schedule as a factor of the peak lr, per optimizer step.

One function serves every engine, so both follow the same curve: linear warmup
from 0, then cosine or linear decay to 0, or constant.
"""

import math


def lr_factor(step, total_steps, warmup_steps, kind):
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if kind == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def warmup_steps_for(total_steps, warmup_ratio):
    return math.ceil(total_steps * warmup_ratio)
