"""GRPO's math as pure functions of tensors (each checked against TRL's GRPOTrainer).

Shapes: B completions (prompts × group size, each prompt's G completions
contiguous), T completion positions; `mask` [B, T] is 1 on completion tokens.

    advantage   A_i = (r_i - mean of its group) / (std of its group + 1e-4)
                (scale='none': no division, Dr. GRPO; scale='batch': the std of
                the whole batch)
    ratio       ρ_t = exp(log π(t) - log π_old(t))
    token loss  -min(ρ_t A, clip(ρ_t, 1 - ε_low, 1 + ε_high) A) + β · KL_t
    KL_t        k3 estimator of KL(π || π_ref): exp(q) - q - 1 with q = log π_ref - log π
                (non-negative, unbiased); β = 0 skips the reference model. The tokens
                were sampled from π_old, not π: with kl_correction (TRL's default
                use_bias_correction_kl) each term is weighted by ρ_t, which keeps the
                estimate unbiased after the first inner update

How the token losses become one number (`reduce_loss`) is the main difference
between GRPO variants; each returns (sum, count) so that the engines can
normalise over a whole optimizer step (gradient accumulation and ranks):

    'sequence'  each completion's mean token loss, averaged over completions
                (the GRPO paper; TRL loss_type='grpo'): count = completions
    'token'     every token of the step weighs the same (DAPO; TRL 'dapo', and
                'bnpo' within one batch): count = completion tokens
    'constant'  token-loss sum over completions × max_new_tokens, a count that
                does not depend on lengths (Dr. GRPO; TRL 'dr_grpo')
"""

from dataclasses import dataclass

import torch

ADVANTAGE_SCALES = ("group", "batch", "none")
NORMALIZATIONS = ("sequence", "token", "constant")
STD_EPS = 1e-4  # TRL's; keeps a group whose rewards are all equal at advantage 0


def nanstd(values, dim=None):
    """Standard deviation with Bessel's correction, ignoring NaNs (NaN with under two values)."""
    if dim is None:
        values, dim = values.reshape(-1), 0
    count = (~values.isnan()).sum(dim, keepdim=True)
    squares = (values - values.nanmean(dim, keepdim=True)) ** 2
    variance = squares.nansum(dim, keepdim=True) / (count - 1).clamp(min=1)
    return variance.sqrt().masked_fill(count < 2, float("nan")).squeeze(dim)


def group_advantages(rewards, group_size, scale="group"):
    """Advantages [B] of rewards [B] (NaN: not scored, advantage 0) in groups of `group_size`."""
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    grouped = rewards.view(-1, group_size)
    advantages = (grouped - grouped.nanmean(dim=1, keepdim=True)).reshape(-1)
    if scale == "group":
        std = nanstd(grouped, dim=1).repeat_interleave(group_size)
        advantages = advantages / (std + STD_EPS)
    elif scale == "batch":
        advantages = advantages / (nanstd(rewards) + STD_EPS)
    return torch.nan_to_num(advantages, nan=0.0)


def k3_kl(logps, ref_logps):
    """Per-token k3 estimate of KL(π || π_ref) from the sampled tokens' log-probs."""
    q = ref_logps - logps
    return torch.exp(q) - q - 1


@dataclass
class TokenLoss:
    loss: torch.Tensor  # [B, T] per-token loss (unmasked)
    ratio: torch.Tensor  # [B, T] ρ_t
    clipped_low: torch.Tensor  # [B, T] bool: ρ below 1 - ε_low with A < 0 (gradient cut)
    clipped_high: torch.Tensor  # [B, T] bool: ρ above 1 + ε_high with A > 0 (gradient cut)
    kl: torch.Tensor = None  # [B, T] k3 KL, None when β = 0


def clipped_token_loss(logps, old_logps, advantages, epsilon_low=0.2, epsilon_high=None,
                       beta=0.0, ref_logps=None, kl_correction=True):
    """The PPO-style clipped surrogate per token, plus β·KL. `advantages` is [B] (one per
    completion, GRPO) or [B, T] (one per token, PPO)."""
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    loss = -torch.min(ratio * advantages, clipped * advantages)
    kl = None
    if beta != 0.0:
        kl = k3_kl(logps, ref_logps)
        if kl_correction:
            kl = kl * ratio
        loss = loss + beta * kl
    return TokenLoss(loss, ratio, (ratio < 1 - epsilon_low) & (advantages < 0),
                     (ratio > 1 + epsilon_high) & (advantages > 0), kl)


def reduce_loss(token_loss, mask, normalization, max_new_tokens=None):
    """(sum, count) of per-token losses [B, T] over `mask` for a normalisation of
    NORMALIZATIONS; the loss of a step is the sum of sums / the sum of counts."""
    mask = mask.to(token_loss.dtype)
    if normalization == "sequence":
        per_sequence = (token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        return per_sequence.sum(), torch.tensor(float(mask.shape[0]), device=mask.device)
    if normalization == "token":
        return (token_loss * mask).sum(), mask.sum()
    if normalization == "constant":
        if not max_new_tokens:
            raise ValueError("normalization 'constant' needs max_new_tokens")
        return (token_loss * mask).sum(), torch.tensor(float(mask.shape[0] * max_new_tokens),
                                                       device=mask.device)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def masked_mean(values, mask):
    """Mean of `values` where `mask` is 1 (0 when the mask is empty)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)
