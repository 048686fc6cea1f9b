"""Preference losses as pure functions of per-sequence log-probabilities.

Inputs are per-pair tensors [pairs]: the policy's summed log-probs of the chosen
and rejected replies (xft.model.logprobs.sequence_logprobs), the reference
model's, and the replies' trained-token counts where a loss normalises by length.
Each function returns per-pair losses (the objective sums them and divides by
the step's pair count) and the chosen / rejected rewards it logs. Each equals
TRL's definition of the same loss (tests/test_preference_loss.py runs TRL on
the same tensors):

dpo_losses      DPO (Rafailov et al. 2023) and its variants on the log-ratio
                margin Δ = (π_c - ref_c) - (π_r - ref_r):
                  sigmoid  -(1-ε)·logσ(βΔ) - ε·logσ(-βΔ)  (ε: label smoothing, cDPO)
                  robust   unbiased under flip probability ε (Chowdhury et al. 2024)
                  hinge    relu(1 - βΔ)  (SLiC)
                  ipo      (Δ_avg - 1/(2β))², Δ_avg from per-token log-ratios (IPO)
                rewards β·(π - ref)
simpo_losses    SimPO (Meng et al. 2024): reference-free, length-normalised,
                -logσ(β·(π_c/|c| - π_r/|r|) - γ); rewards β·π/|y|
orpo_losses     ORPO (Hong et al. 2024): reference-free, the chosen reply's NLL per
                token minus λ·logσ(log-odds ratio) of the mean token log-probs;
                rewards λ·π/|y|
kto_losses      KTO (Ethayarajh et al. 2024) on unpaired replies: desirable
                w_d·(1 - σ(β(r - z))), undesirable w_u·(1 - σ(β(z - r))), with
                r = π - ref and z the detached KL reference point
sft_nll         the chosen reply's NLL per token: RPO's extra term (Pang et al.
                2024), weighted by `rpo_alpha` in the DPO objective
bradley_terry_losses   reward models: -logσ(s_c - s_r - margin)

Per-token quantities are normalised per pair (a reply's own token count), so a
loss is a sum over pairs and gradient accumulation splits it exactly; TRL's
pooled batch means (its RPO/ORPO NLL) equal these at one pair per batch.
"""

import math

import torch
import torch.nn.functional as F

DPO_LOSS_TYPES = ("sigmoid", "robust", "hinge", "ipo")


def dpo_losses(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, beta,
               loss_type="sigmoid", label_smoothing=0.0, chosen_tokens=None,
               rejected_tokens=None):
    """(losses, chosen_rewards, rejected_rewards) of DPO-family losses; see the module doc."""
    chosen_logratios = chosen_logps - ref_chosen_logps
    rejected_logratios = rejected_logps - ref_rejected_logps
    margin = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        losses = (-(1 - label_smoothing) * F.logsigmoid(beta * margin)
                  - label_smoothing * F.logsigmoid(-beta * margin))
    elif loss_type == "robust":
        losses = ((-(1 - label_smoothing) * F.logsigmoid(beta * margin)
                   + label_smoothing * F.logsigmoid(-beta * margin)) / (1 - 2 * label_smoothing))
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * margin)
    elif loss_type == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("the ipo loss needs the replies' token counts")
        per_token = (chosen_logratios / chosen_tokens.clamp(min=1)
                     - rejected_logratios / rejected_tokens.clamp(min=1))
        losses = (per_token - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r} (known: {DPO_LOSS_TYPES})")
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def simpo_losses(chosen_logps, rejected_logps, chosen_tokens, rejected_tokens, beta, gamma,
                 label_smoothing=0.0):
    """(losses, chosen_rewards, rejected_rewards) of SimPO."""
    chosen_avg = chosen_logps / chosen_tokens.clamp(min=1)
    rejected_avg = rejected_logps / rejected_tokens.clamp(min=1)
    logits = beta * (chosen_avg - rejected_avg) - gamma
    losses = (-(1 - label_smoothing) * F.logsigmoid(logits)
              - label_smoothing * F.logsigmoid(-logits))
    return losses, beta * chosen_avg.detach(), beta * rejected_avg.detach()


def orpo_losses(chosen_logps, rejected_logps, chosen_tokens, rejected_tokens, beta):
    """(losses, chosen_rewards, rejected_rewards) of ORPO; beta is the paper's λ."""
    chosen_avg = chosen_logps.float() / chosen_tokens.clamp(min=1)
    rejected_avg = rejected_logps.float() / rejected_tokens.clamp(min=1)
    log_odds = (chosen_avg - rejected_avg) - (_log1mexp(chosen_avg) - _log1mexp(rejected_avg))
    losses = -chosen_avg - beta * F.logsigmoid(log_odds)
    return losses, beta * chosen_avg.detach(), beta * rejected_avg.detach()


def kto_losses(logps, ref_logps, desirable, kl, beta, desirable_weight=1.0,
               undesirable_weight=1.0):
    """(losses, rewards) of KTO for unpaired replies; `desirable` is a bool tensor."""
    logratios = logps - ref_logps
    kl = kl.detach()
    losses = torch.where(desirable,
                         desirable_weight * (1 - torch.sigmoid(beta * (logratios - kl))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (kl - logratios))))
    return losses, beta * logratios.detach()


def sft_nll(chosen_logps, chosen_tokens):
    """The chosen reply's negative log-likelihood per token (RPO's term)."""
    return -chosen_logps / chosen_tokens.clamp(min=1)


def bradley_terry_losses(chosen_scores, rejected_scores, margin=None):
    """Reward-model loss per pair: -logσ(s_c - s_r - margin)."""
    diff = chosen_scores - rejected_scores
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)


def _log1mexp(x):
    """log(1 - exp(x)) for x < 0, with the branch that keeps each side precise."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def pair_metrics(chosen_rewards, rejected_rewards, chosen_logps, rejected_logps):
    """Per-step metric sums over the pairs, named as TRL logs them (divide by the pair count)."""
    return {
        "rewards/chosen": chosen_rewards.sum(),
        "rewards/rejected": rejected_rewards.sum(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().sum(),
        "rewards/margins": (chosen_rewards - rejected_rewards).sum(),
        "logps/chosen": chosen_logps.detach().sum(),
        "logps/rejected": rejected_logps.detach().sum(),
    }
