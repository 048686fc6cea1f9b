"""Model FLOPs per token and the time a run takes at a stated MFU.

Counting (per trained token; N = weights a token is multiplied by, i.e. every
linear layer of the decoder, not the embedding lookup):
  forward                 2N
  backward, activations   2N   (always: gradients flow to the layers below)
  backward, weights       2N × trainable share (full: all; LoRA/QLoRA: the adapters only)
So full fine-tuning is 6N and a frozen base with LoRA about 4N. The output head
(vocab × hidden) counts the same way but only at labelled positions when the
loss computes logits at labels only (train.loss_at_labels_only). Attention
scores add 12 × layers × seq × heads × head_dim (QKᵀ and AV, forward and
backward, over the whole row as PaLM's MFU convention counts them, appendix B
of Chowdhery et al. 2022). Gradient checkpointing repeats the
decoder's forward in backward (+2N). MFU (model FLOPs utilisation) is the share
of the GPU's peak those FLOPs run at; it is stated, not measured.
"""

from dataclasses import dataclass


@dataclass
class Speed:
    flops_per_token: float
    decoder_weights: int
    head_weights: int
    tokens_per_second: float  # per GPU; None without a peak figure
    mfu: float


def linear_weights(config):
    """(decoder matmul weights, head weights) from a transformers config."""
    text = config.get_text_config()
    hidden, layers = text.hidden_size, text.num_hidden_layers
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)  # q, o; k, v
    mlp = 3 * hidden * text.intermediate_size  # gate, up, down (gated MLPs)
    return layers * (attention + mlp), text.vocab_size * hidden


def flops_per_token(experiment, config, trainable_share, label_fraction=1.0):
    decoder, head = linear_weights(config)
    text = config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    full = experiment.method.type == "full"
    per_weight = 4 + (2 if full else 2 * trainable_share)  # forward + both backward halves
    if experiment.model.gradient_checkpointing:
        per_weight += 2  # the decoder's forward again, in backward
    seq = experiment.data.max_length
    attention = 12 * text.num_hidden_layers * seq * heads * head_dim
    head_positions = label_fraction if experiment.train.loss_at_labels_only else 1.0
    head_flops = head_positions * head * (6 if full else 4)
    return per_weight * decoder + attention + head_flops, decoder, head


def estimate_speed(experiment, config, trainable_share, peak_tflops, mfu, label_fraction=1.0):
    flops, decoder, head = flops_per_token(experiment, config, trainable_share, label_fraction)
    rate = peak_tflops * 1e12 * mfu / flops if peak_tflops else None
    return Speed(flops, decoder, head, rate, mfu)
