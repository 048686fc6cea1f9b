"""PPO's math as pure functions of tensors (RLHF style: one episode per completion).

Shapes as in xft.rl.grpo: B completions, T completion positions, `mask` [B, T]
1 on completion tokens. A completion is an episode whose steps are its tokens:

    token rewards   r_t = -kl_coef · KL_t, plus the completion's score (a reward
                    model's or the reward functions') on its last token
    GAE             δ_t = r_t + γ V_{t+1} - V_t, A_t = δ_t + γλ A_{t+1}, with V and A
                    zero past the last token (the episode ends there); returns
                    R_t = A_t + V_t are the value targets
    whitening       advantages shifted and scaled to mean 0, variance 1 over the
                    batch's completion tokens
    policy loss     the clipped surrogate of xft.rl.grpo.clipped_token_loss with
                    per-token advantages
    value loss      ½ max((V - R)², (clip(V, V_old ± clip) - R)²)

TRL removed its PPOTrainer (trl 1.x), so tests check GAE and the clipped value
loss against torchrl's implementations and the policy loss against TRL's
GRPOTrainer with per-token advantages.
"""

import torch

from xft.rl.grpo import k3_kl

KL_ESTIMATORS = ("k1", "k3")


def last_token_index(mask):
    """Index of each row's last completion token (0 for an empty row)."""
    return (mask.sum(-1) - 1).clamp(min=0)


def token_rewards(scores, logps, ref_logps, mask, kl_coef, estimator="k1"):
    """Per-token rewards [B, T]: the KL penalty on every completion token and the score
    [B] added on the last one. k1 is log π - log π_ref (the usual RLHF penalty), k3 the
    non-negative estimator of xft.rl.grpo."""
    if estimator == "k1":
        kl = logps - ref_logps
    elif estimator == "k3":
        kl = k3_kl(logps, ref_logps)
    else:
        raise ValueError(f"estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    rewards = (-kl_coef * kl) * mask
    rows = torch.arange(len(scores), device=scores.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards, kl


def gae(rewards, values, mask, gamma=1.0, lam=0.95):
    """(advantages, returns) [B, T] by generalized advantage estimation; positions past a
    row's end get 0 advantage and 0 return."""
    mask = mask.to(values.dtype)
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        next_value = values[:, t + 1] if t + 1 < values.shape[1] else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def masked_whiten(values, mask, shift_mean=True, eps=1e-8):
    """`values` scaled to unit variance (unbiased) over `mask`, and centred unless
    shift_mean=False; 0 outside the mask."""
    mask = mask.to(values.dtype)
    count = mask.sum()
    mean = (values * mask).sum() / count
    variance = (((values - mean) * mask) ** 2).sum() / (count - 1).clamp(min=1)
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def clipped_value_loss(values, old_values, returns, clip):
    """(per-token ½ max of the unclipped and clipped squared errors, clipped [bool])."""
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    loss = 0.5 * torch.maximum((values - returns) ** 2, (clipped_values - returns) ** 2)
    return loss, (values - old_values).abs() > clip
