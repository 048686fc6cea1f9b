"""Training objectives: what a run trains (xft.objectives.base holds the contract).

    base.py  Objective, LossOutput, the registry (register_objective)
    sft.py   'sft': supervised fine-tuning and pretraining documents
    online.py  what the online RL objectives share (prompts, rollouts, metrics)
    grpo.py  'grpo': online RL, group-normalised advantages (xft.rl, docs/rl.md)
    ppo.py   'ppo': online RL with a value head, GAE and a KL-penalised reward
"""

from xft.objectives.base import (OBJECTIVES, LossOutput, Objective, objective_class,
                                 register_objective)
from xft.objectives import grpo, ppo, preference, sft  # noqa: F401  (registers them)

__all__ = ["OBJECTIVES", "LossOutput", "Objective", "build_objective", "objective_class",
           "register_objective"]


def build_objective(objective_cfg, train_cfg=None):
    """The objective a config's `objective` section (xft.config.schema.ObjectiveCfg) names."""
    return objective_class(objective_cfg.type)(objective_cfg.options, train_cfg)
