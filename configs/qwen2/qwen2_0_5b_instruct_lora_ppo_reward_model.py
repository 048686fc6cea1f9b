# PPO with LoRA on Qwen2-0.5B-Instruct, rewarded by a trained reward model (the Chinese-LLaMA-2
# recipe; docs/rl.md): set the reward model's path to the `hf` folder of a preference-stage run
# (objective 'reward', docs/preference.md). Prompts: any SFT-style data (the final assistant
# turn is dropped). The KL reference is the base model (the adapter disabled); the value head
# sits on the policy's last hidden states.
_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/schedules/lora.py',
]
model = dict(path='Qwen/Qwen2-0.5B-Instruct')
objective = dict(type='ppo',
                 rewards=[dict(type='reward_model', path='work_dirs/reward_model/hf')],
                 max_new_tokens=256, temperature=1.0, kl_coef=0.05, vf_coef=0.1,
                 updates_per_rollout=2)
datasets = [dict(path='data/prompts.jsonl', format='alpaca')]
data = dict(max_length=512)
optim = dict(lr=1e-5)
train = dict(batch_size=4, grad_accum=2, epochs=1, save_interval=100)
