# Stage 2 of the RL demo with PPO (docs/rl.md): the exact-answer reward on the toy sums, a
# value head on the policy, two PPO epochs per rollout batch, starting from stage 1's model
# (tiny_llama_full_arithmetic_sft; set model.path to its work_dir/hf). Full fine-tuning: the
# KL reference is a frozen copy of the starting model.
_base_ = [
    '../_base_/models/tiny_llama.py',
    '../_base_/schedules/full.py',
]
objective = dict(type='ppo', rewards=[dict(type='exact_answer', field='answer')],
                 max_new_tokens=6, temperature=1.0, kl_coef=0.02, vf_coef=0.5,
                 updates_per_rollout=2)
datasets = [dict(path='xft://data/arithmetic_prompts.jsonl', format='qa')]
data = dict(max_length=64)
optim = dict(lr=1e-3)
train = dict(batch_size=32, grad_accum=1, max_steps=80, lr_scheduler='constant',
             warmup_ratio=0.0, log_interval=10, save_interval=1000)
