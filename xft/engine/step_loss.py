"""Normalisation of an optimizer step's loss, shared by every engine.

The loss of one optimizer step is

    sum of token losses over all its micro-batches on all ranks
    ----------------------------------------------------------
      label tokens over all its micro-batches on all ranks

so each micro-batch contributes `its token-loss sum * loss_scale(window)` to
the backward pass. The denominator must be known before the first backward,
so engines hand the whole accumulation window's labels to `loss_scale` first.
Data-parallel wrappers (DDP) average gradients over ranks; multiplying by the
world size turns that average back into the sum the formula needs.
"""

import torch

from xft.model.loss import count_label_tokens


def data_parallel_world_size():
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def window_label_tokens(label_batches):
    """Label tokens of one optimizer step: this rank's micro-batches, summed over ranks."""
    import torch.distributed as dist

    total = sum(count_label_tokens(labels) for labels in label_batches)
    total = torch.as_tensor(total, dtype=torch.long, device=label_batches[0].device)
    if data_parallel_world_size() > 1:
        dist.all_reduce(total)
    return total


def loss_scale(label_tokens):
    """Factor that turns a micro-batch's token-loss sum into its share of the step's loss."""
    return data_parallel_world_size() / label_tokens.clamp(min=1).float()
