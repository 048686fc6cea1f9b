"""The causal-LM training loss, kept as (sum, count) so callers can normalise it.

Principle: the loss of an optimizer step is the sum of its token losses divided
by the number of label tokens in the step, not a mean of per-batch means (which
over-weights tokens of short batches). Engines count the step's label tokens
with `count_label_tokens` before any backward pass (see xft.engine.step_loss).
"""

import torch.nn.functional as F

from xft.data.encode import IGNORE_INDEX


def count_label_tokens(labels):
    """Positions that carry a loss: every label but the first of each row (next-token shift)."""
    return (labels[..., 1:] != IGNORE_INDEX).sum()


def token_loss_sum(logits, labels):
    """Sum of next-token cross-entropy over labelled positions, and their count."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    loss_sum = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                               shift_labels.reshape(-1), ignore_index=IGNORE_INDEX,
                               reduction="sum")
    return loss_sum, count_label_tokens(labels)


def causal_lm_logits(model, batch):
    """Logits of a training batch from either collator (padded or packed rows).

    Every key but `labels` goes to the model (attention_mask, position_ids...).
    use_cache=False matters for packed rows: when the model creates a KV cache
    (config.use_cache is True by default), transformers ignores the position_ids
    restarts and builds one causal mask over the whole row, letting samples
    attend to each other.
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs, use_cache=False).logits
