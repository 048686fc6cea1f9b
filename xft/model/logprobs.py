"""Log-probabilities of labelled tokens, for objectives that score whole replies.

Preference losses (DPO and its family, SimPO, ORPO, KTO) and RL objectives need
log π(token | context) at each reply token, summed per sequence, rather than one
cross-entropy total. They get it here, the way xft.model.loss gets SFT's loss:

- the forward stops at the decoder's last hidden states (`last_hidden_states`);
- only positions whose shifted label is not -100 go through the output head,
  in chunks, so the [tokens × vocab] logits never exist at once;
- for a plain nn.Linear head, `TokenLogProbs` computes each chunk's log-probs
  and frees its logits. When the head is frozen (LoRA, QLoRA) the gradient
  with respect to the hidden states is computed in the forward, chunk by chunk,
  and backward only scales it per token; when the head trains, backward
  recomputes each chunk's logits (one more matrix product, no stored logits);
- any other head (a PEFT-wrapped head, ZeRO-3 partitioned weights) is called
  per chunk under activation checkpointing, and models whose forward changes
  the head's output (not in PLAIN_HEAD_MODEL_TYPES) take the full-logits path.

Rows may be chosen and rejected replies of the same pairs stacked in one batch:
one forward computes both. A reward model (a sequence classifier) has one score
per row instead: `sequence_scores`.
"""

import torch
import torch.nn.functional as F

from xft.data.encode import IGNORE_INDEX
from xft.model.loss import (add_head_grads, causal_lm_logits, has_plain_head, is_plain_linear,
                            last_hidden_states, unwrap_causal_lm)


def token_logprobs(model, batch, at_labels_only=True, chunk_size=1024):
    """[rows, seq - 1] log-probability of each next-token label; 0 where the label is -100.

    `batch` has input_ids, labels and what the model needs besides (attention_mask,
    position_ids). Column t scores labels[:, t + 1] from the context up to t.
    """
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    if at_labels_only and has_plain_head(model):
        hidden = last_hidden_states(model, batch)[:, :-1][keep]
        head = unwrap_causal_lm(model).get_output_embeddings()
        picked = head_token_logprobs(head, hidden, targets[keep], chunk_size)
    else:
        logits = causal_lm_logits(model, batch)[:, :-1][keep]
        picked = _picked_logprobs(logits, targets[keep])
    out = torch.zeros(keep.shape, dtype=picked.dtype, device=picked.device)
    return out.masked_scatter(keep, picked)


def sequence_logprobs(model, batch, at_labels_only=True, chunk_size=1024):
    """(sum of label log-probs per sequence, labelled tokens per sequence).

    A sequence is a row, or, in packed rows, each span the batch's `sequence_index`
    [rows, seq] names (sequence number per token, -1 on padding): the sums are then in
    the order of those numbers.
    """
    per_token = token_logprobs(model, batch, at_labels_only, chunk_size)
    labelled = batch["labels"][:, 1:] != IGNORE_INDEX
    if "sequence_index" not in batch:
        return per_token.sum(-1), labelled.sum(-1)
    # Column t scores the label of token t + 1: the sequence of that token.
    index = batch["sequence_index"][:, 1:][labelled]
    sequences = int(batch["sequence_index"].max()) + 1
    sums = per_token.new_zeros(sequences).index_add(0, index, per_token[labelled])
    counts = torch.zeros(sequences, dtype=torch.long, device=index.device).index_add(
        0, index, torch.ones_like(index))
    return sums, counts


def head_token_logprobs(head, hidden, targets, chunk_size):
    """log_softmax(head(hidden))[i, targets[i]] for hidden [n, dim], chunk by chunk."""
    if is_plain_linear(head):
        return TokenLogProbs.apply(hidden, head.weight, head.bias, targets, chunk_size)

    def chunk_logprobs(h, t):
        return _picked_logprobs(head(h), t)

    if chunk_size is None or hidden.size(0) <= chunk_size:
        return chunk_logprobs(hidden, targets)
    from torch.utils.checkpoint import checkpoint

    return torch.cat([checkpoint(chunk_logprobs, hidden[s:s + chunk_size],
                                 targets[s:s + chunk_size], use_reentrant=False)
                      for s in range(0, hidden.size(0), chunk_size)])


def _picked_logprobs(logits, targets):
    logits = logits.float()
    return logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)


class TokenLogProbs(torch.autograd.Function):
    """log_softmax(hidden @ weight.T + bias)[i, target_i] per row i, chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size):
        want_h = ctx.needs_input_grad[0]
        head_trains = ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2])
        acc = torch.promote_types(hidden.dtype, torch.float32)  # softmax in at least fp32
        step = chunk_size or max(hidden.size(0), 1)
        out = hidden.new_empty(hidden.size(0), dtype=acc)
        lse = hidden.new_empty(hidden.size(0), dtype=acc) if head_trains else None
        grad_h = torch.empty_like(hidden) if want_h and not head_trains else None
        for s in range(0, hidden.size(0), step):
            h, t = hidden[s:s + step], targets[s:s + step]
            logits = F.linear(h, weight, bias).to(acc)
            chunk_lse = logits.logsumexp(-1)
            out[s:s + step] = logits.gather(1, t[:, None]).squeeze(1) - chunk_lse
            if head_trains:
                lse[s:s + step] = chunk_lse
            elif grad_h is not None:
                # d logp_i / d logits_i = one_hot(t_i) - softmax_i, built in place.
                grad_logits = logits.sub_(chunk_lse[:, None]).exp_().neg_()
                grad_logits[torch.arange(t.size(0), device=t.device), t] += 1
                add_head_grads(grad_logits, h, weight, grad_h[s:s + step], None, None)
        ctx.chunk_size, ctx.head_trains = step, head_trains
        ctx.want = (want_h, ctx.needs_input_grad[1],
                    bias is not None and ctx.needs_input_grad[2])
        if head_trains:
            ctx.save_for_backward(hidden, weight, bias, targets, lse)
        else:
            ctx.save_for_backward(grad_h)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        want_h, want_w, want_b = ctx.want
        if not ctx.head_trains:
            (grad_h,) = ctx.saved_tensors
            grad_h = grad_h * grad_out[:, None].to(grad_h.dtype) if want_h else None
            return grad_h, None, None, None, None
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros_like(weight) if want_w else None
        grad_b = torch.zeros_like(bias) if want_b else None
        step = ctx.chunk_size
        for s in range(0, hidden.size(0), step):
            h, t, g = hidden[s:s + step], targets[s:s + step], grad_out[s:s + step]
            logits = F.linear(h, weight, bias).to(lse.dtype)
            # d loss / d logits = g * (one_hot - softmax), from the saved log-sum-exp.
            grad_logits = logits.sub_(lse[s:s + step, None]).exp_().mul_(-g[:, None])
            grad_logits[torch.arange(t.size(0), device=t.device), t] += g
            add_head_grads(grad_logits, h, weight, grad_h[s:s + step] if want_h else None,
                           grad_w, grad_b)
        return grad_h, grad_w, grad_b, None, None


def sequence_scores(model, batch):
    """A sequence-classification model's score of each row [rows] (float32). transformers
    reads it at each row's last non-padding token, as it does for any user of the model."""
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    return model(**inputs, use_cache=False).logits[:, 0].float()
