"""An objective's loss and metrics over a whole held-out dataset.

Shared by both training engines (xft.engine.validation) and `xft eval`. The
loss has the training loss's definition (xft.engine.step_loss): the sum of the
objective's loss sums over the whole dataset divided by the sum of its counts
(label tokens for SFT), so it is a token-weighted mean for SFT, not a mean of
per-batch or per-sample means, and does not depend on the batch size or on
packing. Metrics are divided by the same count.
"""

import math
from dataclasses import dataclass, field

import torch


@dataclass
class EvalResult:
    loss: float  # loss sum / count
    count: int  # the objective's count over the dataset (SFT: label tokens)
    samples: int  # dataset items (packed rows when packed)
    metrics: dict = field(default_factory=dict)  # name → sum / count

    def record(self, objective):
        """The validation record the objective defines (holds its validation_key)."""
        return objective.eval_record(self.loss, self.count, self.metrics)


@torch.no_grad()
def evaluate(model, dataset, collator, objective, batch_size=1):
    """EvalResult of `model` over `dataset` (in order, batches of `batch_size`), with the
    objective's loss (training's own object, so e.g. SFT's 150k-vocabulary head is
    evaluated in chunks too).

    Under torch.distributed each rank takes every world_size-th batch and the
    sums are all-reduced, so every rank returns the same numbers.
    """
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout
    names = list(objective.metric_names)
    # loss sum, count, then each metric's sum
    totals = torch.zeros(2 + len(names), dtype=torch.float64, device=device)
    try:
        starts = range(0, len(dataset), batch_size)
        for start in list(starts)[rank::world]:
            batch = collator([dataset[i] for i in range(start, min(start + batch_size,
                                                                   len(dataset)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            out = objective.loss(model, batch)
            totals[0] += out.sum.double()
            totals[1] += out.count
            for i, name in enumerate(names):
                totals[2 + i] += out.metrics[name].double()
    finally:
        model.train(was_training)
    if distributed:
        dist.all_reduce(totals)
    count = int(totals[1])
    values = [float(t) / count if count else math.nan for t in totals.tolist()]
    return EvalResult(values[0], count, len(dataset), dict(zip(names, values[2:])))
