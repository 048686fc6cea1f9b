"""Per-token log-probabilities (and entropies) of completions under a causal LM.

Rollouts and the RL losses score the same tokens the same way: the prompt
(left-padded) and the completion (right-padded) are one row, positions count
real tokens only (as `generate` counts them for a left-padded batch), and the
forward keeps logits only for the completion (`logits_to_keep`), so the prompt
never goes through the output head.

Log-probs are taken from logits / temperature: the distribution completions
were sampled from (top-p/top-k truncation aside), as TRL's GRPOTrainer does.
"""

import torch

from xft.errors import ConfigError
from xft.model.reference import reference_scores


def positions(attention_mask):
    """position_ids of left- or right-padded rows: 0, 1, ... over the real tokens."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def token_logprobs(logits, tokens, temperature=1.0, with_entropy=False):
    """(log p(tokens), entropy or None) from `logits` [B, T, V] predicting `tokens` [B, T].

    One row at a time, in fp32: the [T, V] softmax temporaries of the whole batch
    would be several times the logits' size for a large vocabulary."""
    logps, entropies = [], []
    for row_logits, row_tokens in zip(logits, tokens):
        log_probs = torch.log_softmax(row_logits.float() / temperature, dim=-1)
        logps.append(log_probs.gather(-1, row_tokens.unsqueeze(-1)).squeeze(-1))
        if with_entropy:
            entropies.append(-(log_probs.exp() * log_probs).sum(-1))
    return torch.stack(logps), (torch.stack(entropies) if with_entropy else None)


def completion_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                        temperature=1.0, with_entropy=False, value_head=None):
    """(per-token log-probs [B, C], entropies [B, C] or None) of the completions; positions
    past a completion's end get whatever the model says there: callers mask them.

    With a `value_head` (PPO), a third item: its values [B, C] at the same positions,
    read from the decoder's last hidden states (the state before each completion token)."""
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    width = completion_ids.shape[1]
    out = model(input_ids=input_ids, attention_mask=attention_mask,
                position_ids=positions(attention_mask), use_cache=False,
                logits_to_keep=width + 1, output_hidden_states=value_head is not None)
    logps, entropy = token_logprobs(out.logits[:, :-1], completion_ids, temperature,
                                    with_entropy)
    if value_head is None:
        return logps, entropy
    hidden = out.hidden_states[-1][:, -(width + 1):-1]
    return logps, entropy, value_head(hidden.to(value_head.weight.dtype)).squeeze(-1)


def reference_logprobs(model, reference, batch, temperature):
    """Log-probs of the batch's completions under the reference policy (an
    xft.model.reference.Reference: the disabled or starting adapter, or a frozen copy)."""
    if reference is None:
        raise ConfigError("a KL penalty needs a reference policy (the objective's "
                          "prepare_model decides it), or set the KL weight to 0")
    return reference_scores(model, batch, reference, lambda scorer, b: completion_logprobs(
        scorer, b["prompt_ids"], b["prompt_mask"], b["completion_ids"], b["completion_mask"],
        temperature)[0])
