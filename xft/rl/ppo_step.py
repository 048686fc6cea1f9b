"""One PPO step in two halves, `rollout` and `loss`, like xft.rl.grpo_step.

The value model is a value head (one linear layer) on the policy's last hidden
states, trained with it. The rollout generates one completion per prompt,
scores it with the reward functions, and freezes what the PPO epochs compare
against: the old log-probs and values (a no-grad forward of the policy as it is),
the reference log-probs (an xft.model.reference.Reference; none needed when
kl_coef is 0), the KL-penalised
token rewards, GAE advantages (whitened) and returns (xft.rl.ppo).
"""

import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from xft.errors import ConfigError
from xft.rl.grpo import clipped_token_loss, masked_mean
from xft.rl.logprobs import completion_logprobs, reference_logprobs
from xft.rl.ppo import KL_ESTIMATORS, clipped_value_loss, gae, masked_whiten, token_rewards
from xft.rl.rewards import reward_metrics
from xft.rl.rollout import RolloutStep


@dataclass
class PPOOptions:
    rewards: list = field(default_factory=list)  # see xft.rl.rewards
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    kl_coef: float = 0.05
    kl_estimator: str = "k1"
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    whiten_advantages: bool = True
    generator: str = "transformers"
    updates_per_rollout: int = 1  # PPO epochs: optimizer steps on each rollout batch

    def check(self):
        def fail(key, value, allowed):
            raise ConfigError(f"'objective.{key}' must be {allowed}, got {value!r}")
        if self.kl_estimator not in KL_ESTIMATORS:
            fail("kl_estimator", self.kl_estimator, f"one of {list(KL_ESTIMATORS)}")
        for key in ("gamma", "lam"):
            if not 0 <= getattr(self, key) <= 1:
                fail(key, getattr(self, key), "in [0, 1]")
        for key in ("kl_coef", "vf_coef", "cliprange", "cliprange_value"):
            if getattr(self, key) < 0:
                fail(key, getattr(self, key), ">= 0")
        if self.temperature <= 0:
            fail("temperature", self.temperature, "> 0")


def value_head_for(model):
    """A fresh value head for `model`: hidden size → 1, small random weights, zero bias."""
    hidden = model.config.get_text_config().hidden_size
    head = torch.nn.Linear(hidden, 1)
    torch.nn.init.normal_(head.weight, std=1 / (hidden + 1) ** 0.5)
    torch.nn.init.zeros_(head.bias)
    return head.to(next(model.parameters()).device)


class PPOStep(RolloutStep):

    def rollout(self, model, value_head, prompts, records, seed):
        o = self.options
        started = time.perf_counter()
        rollout = self.generator.generate(model, prompts, seed)
        seconds = time.perf_counter() - started
        total, per_function = self.score(rollout, records)
        scores = torch.nan_to_num(total, nan=0.0).to(rollout.prompt_ids.device)
        batch = {"prompt_ids": rollout.prompt_ids, "prompt_mask": rollout.prompt_mask,
                 "completion_ids": rollout.completion_ids,
                 "completion_mask": rollout.completion_mask}
        mask = rollout.completion_mask
        with torch.no_grad():
            old_logps, _, old_values = completion_logprobs(
                model, *batch.values(), self.generator.temperature, value_head=value_head)
            ref_logps = old_logps if not o.kl_coef else reference_logprobs(
                model, self.reference, batch, self.generator.temperature)
        rewards, kl = token_rewards(scores, old_logps, ref_logps, mask, o.kl_coef,
                                    o.kl_estimator)
        advantages, returns = gae(rewards, old_values, mask, o.gamma, o.lam)
        if o.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
        batch.update(old_logps=old_logps, old_values=old_values * mask, returns=returns,
                     advantages=advantages)
        lengths = rollout.lengths.float()
        metrics = {**reward_metrics(self.rewards, total, per_function),
                   "kl": masked_mean(kl, mask).item(),
                   "completion_length": lengths.mean().item(),
                   "advantage/mean": masked_mean(advantages, mask).item(),
                   "returns/mean": masked_mean(returns, mask).item(),
                   "generation_tokens_per_s": lengths.sum().item() / max(seconds, 1e-9)}
        return batch, metrics, rollout

    def loss(self, model, value_head, batch):
        """(policy + vf_coef · value loss summed over completion tokens, token count, metrics)."""
        o = self.options
        mask = batch["completion_mask"]
        logps, entropy, values = completion_logprobs(
            model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], mask,
            self.generator.temperature, with_entropy=True, value_head=value_head)
        policy = clipped_token_loss(logps, batch["old_logps"], batch["advantages"],
                                    o.cliprange)
        value_loss, value_clipped = clipped_value_loss(values, batch["old_values"],
                                                       batch["returns"], o.cliprange_value)
        mask_f = mask.to(logps.dtype)
        loss_sum = ((policy.loss + o.vf_coef * value_loss) * mask_f).sum()
        metrics = {"entropy": masked_mean(entropy.detach(), mask),
                   "value_loss": masked_mean(value_loss.detach(), mask),
                   "clip/policy": masked_mean((policy.clipped_low | policy.clipped_high).float(),
                                              mask),
                   "clip/value": masked_mean(value_clipped.float(), mask)}
        return loss_sum, mask.sum(), metrics

