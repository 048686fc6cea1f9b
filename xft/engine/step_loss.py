"""Normalisation of an optimizer step's loss and metrics, shared by every engine.

The loss of one optimizer step is

    sum of the objective's loss sums over all its micro-batches on all ranks
    ------------------------------------------------------------------------
      sum of the objective's counts over the same micro-batches

(label tokens for SFT), so each micro-batch contributes `its loss sum *
loss_scale(window)` to the backward pass. The denominator must be known before
the first backward, so engines call `Objective.count` on every micro-batch of
the accumulation window and hand the counts to `window_count` first.
Data-parallel wrappers (DDP) average gradients over ranks; multiplying by the
world size turns that average back into the sum the formula needs. The
objective's metrics are scaled by the same factor (StepMetrics), so they too
are per-step sums over the step's count.
"""

import torch


def data_parallel_world_size():
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def window_count(counts, device=None):
    """The normaliser of one optimizer step: this rank's micro-batch counts (from
    Objective.count), summed over ranks; a long tensor on `device` (default: the counts')."""
    import torch.distributed as dist

    total = torch.as_tensor(sum(counts), dtype=torch.long,
                            device=device if device is not None else counts[0].device)
    if data_parallel_world_size() > 1:
        dist.all_reduce(total)
    return total


def loss_scale(count):
    """Factor that turns a micro-batch's loss sum into its share of the step's loss."""
    return data_parallel_world_size() / count.clamp(min=1).float()


def mean_over_ranks(values):
    """Each rank's share is scaled by the world size (see loss_scale): the mean over ranks
    of a stacked tensor of such shares is the step's value."""
    import torch.distributed as dist

    if data_parallel_world_size() > 1:
        dist.all_reduce(values)
        values = values / dist.get_world_size()
    return values


class StepMetrics:
    """One optimizer step's objective metrics (LossOutput.metrics), summed over its
    micro-batches with each micro-batch's loss scale."""

    def __init__(self):
        self.sums = {}

    def add(self, metrics, scale):
        for name, value in metrics.items():
            share = value.detach().float() * scale
            self.sums[name] = self.sums[name] + share if name in self.sums else share

    def take(self):
        """{name: float} of the step (the same on every rank), and start the next step.
        Every rank must call it: with metrics, it all-reduces."""
        if not self.sums:
            return {}
        names = sorted(self.sums)
        values = mean_over_ranks(torch.stack([self.sums[n] for n in names])).tolist()
        self.sums = {}
        return dict(zip(names, values))
