"""The causal-LM training loss, kept as (sum, count) so callers can normalise it.

Principle: the loss of an optimizer step is the sum of its token losses divided
by the number of label tokens in the step, not a mean of per-batch means (which
over-weights tokens of short batches). The SFT objective (xft.objectives.sft)
counts them with `count_label_tokens`, which the engines call before any
backward pass (see xft.engine.step_loss).

Two ways to get the token-loss sum of a batch, equal to float precision:

plain           the model's forward computes logits at every position
                (`causal_lm_logits`), then `token_loss_sum`.
labels only     (`CausalLMLoss` with at_labels_only) the forward stops at the
                decoder's last hidden states; only the positions whose shifted
                label is not -100 go through the output head, in chunks, and
                each chunk's logits are freed once its loss and gradients are
                known. In SFT, where prompts carry no labels, this skips a large
                part of the head's work, and the [tokens × vocab] logits tensor
                (over 1 GB fp32 for 2k tokens of a 151k vocabulary) never exists.
"""

import torch
import torch.nn.functional as F

from xft.data.encode import IGNORE_INDEX

# Model types whose causal-LM forward is exactly `lm_head(decoder(...).last_hidden_state)`
# (checked in transformers' modeling code and by tests/test_loss.py). Others, such as
# Gemma2's logit soft-capping or Cohere's logit_scale, post-process the logits: they take
# the plain path rather than reproducing each model's extra step here.
PLAIN_HEAD_MODEL_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "phi", "phi3",
    "gemma", "starcoder2", "olmo2",
})


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


# What a batch gives the model; objectives may add their own keys (e.g. a packed pair
# batch's sequence_index, precomputed reference log-probs) that the model must not get.
MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def _model_inputs(batch):
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}


def causal_lm_logits(model, batch):
    """Logits of a training batch from either collator (padded or packed rows).

    The MODEL_INPUTS keys go to the model (attention_mask or position_ids).
    use_cache=False matters for packed rows: when the model creates a KV cache
    (config.use_cache is True by default), transformers ignores the position_ids
    restarts and builds one causal mask over the whole row, letting samples
    attend to each other.
    """
    return model(**_model_inputs(batch), use_cache=False).logits


def unwrap_causal_lm(model):
    """The transformers causal LM inside engine wrappers (DDP, DeepSpeed: `.module`) and PEFT."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):  # peft.PeftModel; LoRA layers live inside it
        model = model.get_base_model()
    return model


def has_plain_head(model):
    """Whether the labels-only path reproduces this model's logits (see PLAIN_HEAD_MODEL_TYPES)."""
    lm = unwrap_causal_lm(model)
    config = getattr(lm, "config", None)
    return (getattr(config, "model_type", None) in PLAIN_HEAD_MODEL_TYPES
            and hasattr(lm, "get_decoder") and lm.get_output_embeddings() is not None)


class CausalLMLoss:
    """(token-loss sum, label tokens) of a micro-batch, the way train.loss_* configure it.

    at_labels_only: compute logits only at labelled positions (module docstring),
        for models in PLAIN_HEAD_MODEL_TYPES; other models take the plain path.
    chunk_size: labelled positions per output-head chunk; None: all in one.
    """

    def __init__(self, at_labels_only=True, chunk_size=1024):
        self.at_labels_only, self.chunk_size = at_labels_only, chunk_size
        self.workspace = LogitsWorkspace()

    def uses_labels_only(self, model):
        return self.at_labels_only and has_plain_head(model)

    def __call__(self, model, batch):
        if not self.uses_labels_only(model):
            return token_loss_sum(causal_lm_logits(model, batch), batch["labels"])
        hidden = last_hidden_states(model, batch)
        targets = batch["labels"][:, 1:]
        keep = targets != IGNORE_INDEX
        # The hidden state at position t predicts the label at t + 1.
        hidden, targets = hidden[:, :-1][keep], targets[keep]
        head = unwrap_causal_lm(model).get_output_embeddings()
        return (head_loss_sum(head, hidden, targets, self.chunk_size, self.workspace),
                keep.sum())


def last_hidden_states(model, batch):
    """The decoder's final hidden states [batch, seq, hidden] of a training forward.

    The whole model is called (not its decoder alone), so wrappers that act in
    forward (DDP, DeepSpeed, PEFT) see an ordinary call. A forward hook on the
    decoder keeps its output, and logits_to_keep=1 makes the head's own work in
    that call negligible.
    """
    captured = []
    decoder = unwrap_causal_lm(model).get_decoder()
    hook = decoder.register_forward_hook(
        lambda module, args, output: captured.append(output[0]))
    try:
        model(**_model_inputs(batch), use_cache=False, logits_to_keep=1)
    finally:
        hook.remove()
    return captured[0]


def head_loss_sum(head, hidden, targets, chunk_size, workspace=None):
    """Sum of cross-entropy of head(hidden) [n, vocab] against targets [n], chunk by chunk."""
    if is_plain_linear(head):
        return LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk_size,
                                        workspace)
    # Any other head (PEFT's modules_to_save copy, a LoRA-wrapped head, ZeRO-3
    # partitioned weights) is called as a module; each chunk is recomputed in
    # backward instead of keeping its logits.
    def chunk_loss(h, t):
        return F.cross_entropy(head(h).float(), t, reduction="sum")

    if chunk_size is None or hidden.size(0) <= chunk_size:
        return chunk_loss(hidden, targets)
    from torch.utils.checkpoint import checkpoint

    return sum(checkpoint(chunk_loss, hidden[s:s + chunk_size], targets[s:s + chunk_size],
                          use_reentrant=False)
               for s in range(0, hidden.size(0), chunk_size))


def is_plain_linear(head):
    # DeepSpeed ZeRO-3 marks partitioned parameters with ds_id; their .data is empty
    # outside the module's own forward.
    return type(head) is torch.nn.Linear and not hasattr(head.weight, "ds_id")


class LogitsWorkspace:
    """A buffer LinearCrossEntropy computes each chunk's logits into, kept between calls.

    On CPU a fresh [chunk × vocab] tensor (620 MB fp32 for 1024 × 151k) is new
    memory every time, which the kernel maps and zero-fills page by page: in the
    issue-7 benchmark's 11 steps the buffer saves about 3.5 million page faults and
    7 s of system time (docs/benchmarks.md).
    CUDA's caching allocator already reuses freed blocks, so the workspace is used on
    CPU only (where it would otherwise hold GPU memory between steps).
    """

    def __init__(self):
        self.buffer = None

    def logits(self, rows, columns, like):
        """A [rows × columns] tensor of `like`'s dtype and device, reusing the buffer."""
        size = rows * columns
        buffer = self.buffer
        if (buffer is None or buffer.numel() < size or buffer.dtype != like.dtype
                or buffer.device != like.device):
            self.buffer = buffer = torch.empty(size, dtype=like.dtype, device=like.device)
        return buffer[:size].view(rows, columns)


class LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden_i @ weight.T + bias, target_i), gradients computed chunk by chunk.

    The forward pass computes each chunk's logits, its loss and, right away, the
    gradient of that loss with respect to the logits (softmax - one_hot), which
    it turns into gradients for hidden, weight and bias before freeing the
    chunk. Backward only scales them. Compared with autograd over full logits
    this does the same matrix products (one forward, one or two backward) while
    holding at most one chunk of logits, and no product is recomputed.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, workspace=None):
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_b = bias is not None and ctx.needs_input_grad[2]
        grads_needed = want_h or want_w or want_b
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros_like(weight) if want_w else None
        grad_b = torch.zeros_like(bias) if want_b else None
        # Softmax in at least fp32 (as token_loss_sum does), fp64 stays fp64.
        acc = torch.promote_types(hidden.dtype, torch.float32)
        total = hidden.new_zeros((), dtype=acc)
        step = chunk_size or max(hidden.size(0), 1)
        for s in range(0, hidden.size(0), step):
            h, t = hidden[s:s + step], targets[s:s + step]
            if workspace is not None and weight.device.type == "cpu" and weight.dtype == acc:
                logits = torch.mm(h, weight.t(), out=workspace.logits(h.size(0), weight.size(0),
                                                                     weight))
                if bias is not None:
                    logits.add_(bias)
            else:
                logits = F.linear(h, weight, bias).to(acc)
            # A log-sum-exp done in place in the logits buffer (no second [chunk × vocab]
            # tensor): shift by the row max, exponentiate, sum.
            logits.sub_(logits.amax(dim=-1, keepdim=True))
            target_logits = logits.gather(1, t[:, None]).squeeze(1)
            sums = logits.exp_().sum(dim=-1)
            total += (sums.log() - target_logits).sum()
            if not grads_needed:
                continue
            # d loss / d logits = softmax - one_hot, built in place as well.
            grad_logits = logits.div_(sums[:, None])
            grad_logits[torch.arange(t.size(0), device=t.device), t] -= 1
            add_head_grads(grad_logits, h, weight, grad_h[s:s + step] if want_h else None,
                           grad_w, grad_b)
        ctx.save_for_backward(*(g for g in (grad_h, grad_w, grad_b) if g is not None))
        ctx.present = (want_h, want_w, want_b)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        saved = iter(ctx.saved_tensors)
        grads = [next(saved) * grad_output if present else None for present in ctx.present]
        return grads[0], grads[1], grads[2], None, None, None


def add_head_grads(grad_logits, h, weight, grad_h, grad_w, grad_b):
    """One chunk's output-head gradients from d loss / d logits: written into grad_h (the
    chunk's rows of the hidden states' gradient), added to grad_w and grad_b; None where
    that gradient is not wanted."""
    grad_logits = grad_logits.to(weight.dtype)
    if grad_h is not None:
        torch.mm(grad_logits, weight, out=grad_h)
    if grad_w is not None:
        grad_w.addmm_(grad_logits.t(), h)
    if grad_b is not None:
        grad_b += grad_logits.sum(0)
