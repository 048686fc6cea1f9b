"""'ppo': online RL with a value head, GAE and a KL-penalised reward (docs/rl.md).

Prompts, rollouts and metrics as in xft.objectives.online. The value model is a
value head (one linear layer, `value_head`) registered on the policy model by
`prepare_model`, so both engines train and checkpoint it with the policy (an
adapter export leaves it out: it is not part of the adapter). xft.rl.ppo_step
generates one completion per prompt, scores it (reward functions and/or a
reward model), and freezes the old log-probs and values, the reference
log-probs and the GAE advantages and returns; `count` is completion tokens and
`loss` the clipped policy loss plus vf_coef times the clipped value loss.
"""

import torch

from xft.errors import XftError
from xft.objectives.base import register_objective
from xft.objectives.online import PromptObjective
from xft.rl.ppo_step import PPOOptions, PPOStep, value_head_for

VALUE_HEAD = "value_head"


@register_objective
class PPO(PromptObjective):
    name = "ppo"
    Options = PPOOptions
    count_key = "completion_tokens"
    kl_option = "kl_coef"
    step_metrics = ("kl", "completion_length", "advantage/mean", "returns/mean",
                    "generation_tokens_per_s", "entropy", "value_loss", "clip/policy",
                    "clip/value")

    def attach(self, tokenizer, template, seed):
        self.step = PPOStep(self.options, tokenizer, template)
        self.seed = seed

    def prepare_model(self, model, method_cfg):
        """The reference (PromptObjective), and a fresh value head (drawn from the run's
        seed) registered on the policy."""
        model = super().prepare_model(model, method_cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model.add_module(VALUE_HEAD, value_head_for(model))
        return model

    def step_rollout(self, model, prompts, records, seed):
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            raise XftError("objective 'ppo' runs on one process: its value head is called "
                           "outside the data-parallel forward, so its gradients would not be "
                           "all-reduced (docs/rl.md)")
        return self.step.rollout(model, value_head_of(model), prompts, records, seed)

    def step_loss(self, model, batch):
        loss_sum, _, metrics = self.step.loss(model, value_head_of(model), batch)
        return loss_sum, metrics

    def count(self, batch):
        return self.completion_mask(batch).sum()


def value_head_of(model):
    head = getattr(model, VALUE_HEAD, None)
    if head is None:
        raise XftError("objective 'ppo': the model has no value head (the build step's "
                       "prepare_model was not run on it)")
    return head

