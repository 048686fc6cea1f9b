"""One GRPO step in two halves: `rollout` (generate, score, advantages) and `loss`.

The split is the objective seam's (docs/architecture.md): an engine calls
`rollout` on a micro-batch of prompts, then counts and backpropagates `loss` on
what it returned, exactly as it does for a supervised batch. Each prompt is
answered `group_size` times; the group's rewards give its advantages
(xft.rl.grpo), so groups never span micro-batches or ranks.

The reference policy for the KL term (β > 0) is an xft.model.reference.Reference
(the disabled or starting adapter, or a frozen copy for full fine-tuning).
Old log-probs: with one update per rollout (the default), the ratio is taken
against the current log-probs detached (ρ = 1, its gradient is the policy
gradient), as TRL does; with several (`updates_per_rollout`), against
a no-grad forward of the policy at rollout time (TRL's old_per_token_logps).
Generate's own log-probs are not used for the ratio, since the training forward
may differ from generation (dropout).
"""

import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from xft.errors import ConfigError
from xft.rl.grpo import (ADVANTAGE_SCALES, NORMALIZATIONS, clipped_token_loss,
                         group_advantages, masked_mean, reduce_loss)
from xft.rl.logprobs import completion_logprobs, reference_logprobs
from xft.rl.rewards import reward_metrics
from xft.rl.rollout import RolloutStep


@dataclass
class GRPOOptions:
    rewards: list = field(default_factory=list)  # see xft.rl.rewards
    group_size: int = 4  # completions per prompt (G)
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    beta: float = 0.0  # KL weight; 0: no reference model
    kl_correction: bool = True  # weight the k3 KL by the ratio (TRL use_bias_correction_kl)
    epsilon: float = 0.2  # clip range below 1
    epsilon_high: Optional[float] = None  # clip range above 1 (None: epsilon; DAPO: 0.28)
    scale_rewards: str = "group"  # 'group' | 'batch' | 'none' (Dr. GRPO)
    loss_normalization: str = "sequence"  # 'sequence' | 'token' (DAPO) | 'constant' (Dr. GRPO)
    generator: str = "transformers"
    updates_per_rollout: int = 1  # optimizer steps on each rollout (TRL num_iterations)

    def check(self):
        def fail(key, value, allowed):
            raise ConfigError(f"'objective.{key}' must be {allowed}, got {value!r}")
        if not isinstance(self.group_size, int) or self.group_size < 2:
            fail("group_size", self.group_size, "an integer >= 2 (advantages compare a group)")
        if self.temperature <= 0:
            fail("temperature", self.temperature, "> 0 (GRPO needs varied completions)")
        if self.beta < 0:
            fail("beta", self.beta, ">= 0")
        if not 0 < self.epsilon < 1:
            fail("epsilon", self.epsilon, "in (0, 1)")
        if self.scale_rewards not in ADVANTAGE_SCALES:
            fail("scale_rewards", self.scale_rewards, f"one of {list(ADVANTAGE_SCALES)}")
        if self.loss_normalization not in NORMALIZATIONS:
            fail("loss_normalization", self.loss_normalization, f"one of {list(NORMALIZATIONS)}")


class GRPOStep(RolloutStep):

    def rollout(self, model, prompts: List[List[int]], records: List[dict], seed: int):
        """The batch `loss` trains on: each prompt answered group_size times, scored, with
        advantages; plus the rollout's metrics (means over its completions)."""
        group = self.options.group_size
        repeated = [p for p in prompts for _ in range(group)]
        started = time.perf_counter()
        rollout = self.generator.generate(model, repeated, seed)
        seconds = time.perf_counter() - started
        fields = [r for r in records for _ in range(group)]
        total, per_function = self.score(rollout, fields)
        advantages = group_advantages(total, group, self.options.scale_rewards)
        batch = {"prompt_ids": rollout.prompt_ids, "prompt_mask": rollout.prompt_mask,
                 "completion_ids": rollout.completion_ids,
                 "completion_mask": rollout.completion_mask,
                 "advantages": advantages.to(rollout.prompt_ids.device)}
        if self.options.updates_per_rollout > 1:  # later updates compare with these
            with torch.no_grad():
                batch["old_logps"], _ = completion_logprobs(
                    model, *(batch[k] for k in ("prompt_ids", "prompt_mask", "completion_ids",
                                                "completion_mask")),
                    self.generator.temperature)
        if self.options.beta:
            batch["ref_logps"] = reference_logprobs(model, self.reference, batch,
                                                    self.generator.temperature)
        lengths = rollout.lengths.float()
        metrics = {**reward_metrics(self.rewards, total, per_function),
                   "completion_length": lengths.mean().item(),
                   "stopped": rollout.stopped.float().mean().item(),
                   "advantage/mean": advantages.mean().item(),
                   "advantage/std": advantages.std().item(),
                   "generation_tokens_per_s": lengths.sum().item() / max(seconds, 1e-9)}
        return batch, metrics, rollout

    def loss(self, model, batch):
        """(loss sum, normaliser count, metrics as sums over the same units)."""
        o = self.options
        mask = batch["completion_mask"]
        logps, entropy = completion_logprobs(model, batch["prompt_ids"], batch["prompt_mask"],
                                             batch["completion_ids"], mask,
                                             self.generator.temperature, with_entropy=True)
        old = batch.get("old_logps", logps.detach())
        terms = clipped_token_loss(logps, old, batch["advantages"], o.epsilon, o.epsilon_high,
                                   o.beta, batch.get("ref_logps"), o.kl_correction)
        loss_sum, count = reduce_loss(terms.loss, mask, o.loss_normalization, o.max_new_tokens)
        metrics = {"entropy": masked_mean(entropy.detach(), mask),
                   "clip/low": masked_mean(terms.clipped_low.float(), mask),
                   "clip/high": masked_mean(terms.clipped_high.float(), mask)}
        if terms.kl is not None:
            metrics["kl"] = masked_mean(terms.kl.detach(), mask)
        return loss_sum, count, metrics

