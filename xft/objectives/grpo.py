"""'grpo': online RL with group-normalised advantages (docs/rl.md).

Prompts, rollouts and metrics as in xft.objectives.online; xft.rl.grpo_step
generates `group_size` completions per prompt, scores them and computes the
advantages. `count` is the normalisation's unit (completions, or completion
tokens, or completions × max_new_tokens) and `loss` the clipped objective.
"""

import torch

from xft.objectives.base import register_objective
from xft.objectives.online import PromptObjective
from xft.rl.grpo_step import GRPOOptions, GRPOStep


@register_objective
class GRPO(PromptObjective):
    name = "grpo"
    Options = GRPOOptions
    count_key = "count"
    kl_option = "beta"
    step_metrics = ("completion_length", "stopped", "advantage/mean", "advantage/std",
                    "generation_tokens_per_s", "entropy", "clip/low", "clip/high", "kl")

    def attach(self, tokenizer, template, seed):
        self.step = GRPOStep(self.options, tokenizer, template)
        self.seed = seed

    def step_rollout(self, model, prompts, records, seed):
        return self.step.rollout(model, prompts, records, seed)

    def step_loss(self, model, batch):
        loss_sum, _, metrics = self.step.loss(model, batch)
        return loss_sum, metrics

    def count(self, batch):
        mask = self.completion_mask(batch)
        kind = self.options.loss_normalization
        if kind == "token":
            return mask.sum()
        rows = torch.tensor(mask.shape[0], device=mask.device)
        return rows * self.options.max_new_tokens if kind == "constant" else rows
