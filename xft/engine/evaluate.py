"""Validation loss and perplexity of a model over a whole dataset.

Shared by both training engines (xft.engine.validation) and `xft eval`. The
loss has the training loss's definition (xft.model.loss): the sum of the token
losses over every labelled token of the dataset, divided by the number of
those tokens. It is a token-weighted mean, not a mean of per-batch or
per-sample means, so it does not depend on the batch size or on packing (a
packed row's first label per sample is not trained, as when run alone).
Perplexity is exp(loss).
"""

import math
from dataclasses import dataclass

import torch

from xft.model.loss import CausalLMLoss


@dataclass
class EvalResult:
    loss: float  # token-loss sum / label tokens
    label_tokens: int
    samples: int  # dataset items (packed rows when packed)

    @property
    def ppl(self):
        return perplexity(self.loss)


def perplexity(loss):
    """exp(loss); inf rather than an OverflowError for a hopeless model."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


@torch.no_grad()
def evaluate_loss(model, dataset, collator, batch_size=1, loss=None):
    """EvalResult of `model` over `dataset` (in order, batches of `batch_size`).

    `loss`: the CausalLMLoss computing each batch's token-loss sum (training's own,
    so a 150k-vocabulary head is evaluated in chunks too); default CausalLMLoss().

    Under torch.distributed each rank takes every world_size-th batch and the
    sums are all-reduced, so every rank returns the same numbers.
    """
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    loss = loss or CausalLMLoss()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # no dropout
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    label_tokens = torch.zeros((), dtype=torch.long, device=device)
    try:
        starts = range(0, len(dataset), batch_size)
        for start in list(starts)[rank::world]:
            batch = collator([dataset[i] for i in range(start, min(start + batch_size,
                                                                   len(dataset)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            batch_sum, batch_tokens = loss(model, batch)
            loss_sum += batch_sum.double()
            label_tokens += batch_tokens
    finally:
        model.train(was_training)
    if distributed:
        dist.all_reduce(loss_sum)
        dist.all_reduce(label_tokens)
    count = int(label_tokens)
    return EvalResult(float(loss_sum) / count if count else math.nan, count, len(dataset))
