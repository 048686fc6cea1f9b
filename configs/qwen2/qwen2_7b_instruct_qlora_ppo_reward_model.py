# PPO with QLoRA on Qwen2-7B-Instruct, rewarded by a trained reward model (docs/rl.md, memory
# notes): 4-bit policy whose disabled adapter is the KL reference, a value head on it, and the
# reward model (set its path: a preference-stage run's `hf` folder) loaded in bfloat16.
_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/schedules/qlora.py',
]
model = dict(quantization=dict(bits=4))
objective = dict(type='ppo',
                 rewards=[dict(type='reward_model', path='work_dirs/reward_model/hf',
                               dtype='bfloat16', batch_size=4)],
                 max_new_tokens=256, temperature=1.0, kl_coef=0.05, vf_coef=0.1,
                 updates_per_rollout=2)
datasets = [dict(path='data/prompts.jsonl', format='alpaca')]
data = dict(max_length=512)
method = dict(dropout=0.0)
optim = dict(lr=1e-5)
train = dict(batch_size=2, grad_accum=4, epochs=1, save_interval=100)
