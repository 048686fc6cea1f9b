"""Online reinforcement learning: rollouts, rewards, and the GRPO / PPO loss math (docs/rl.md).

    logprobs.py   per-token log-probs and entropies of completions
    rollout.py    prompts from records, generation backends, Rollout
    rewards.py    reward functions (shipped and from the config), weighted sum, metrics
    grpo.py       group-normalised advantages, clipped ratio loss with k3 KL, normalisations
    ppo.py        KL-penalised token rewards, GAE, whitening, clipped policy and value losses
    grpo_step.py  one GRPO step: rollout (generate, score, advantages) and loss
    ppo_step.py   one PPO step with a value head: rollout (scores, GAE) and loss
"""
