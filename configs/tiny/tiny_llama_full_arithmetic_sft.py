# Stage 1 of the RL demo (docs/rl.md): full fine-tuning of the embedded tiny model on toy
# sums whose answers usually end with a wrong number. Stage 2 (GRPO) removes the habit.
_base_ = [
    '../_base_/models/tiny_llama.py',
    '../_base_/schedules/full.py',
]
datasets = [dict(path='xft://data/arithmetic_sft.jsonl', format='qa')]
data = dict(max_length=64)
optim = dict(lr=3e-3)
train = dict(batch_size=16, grad_accum=1, max_steps=300, lr_scheduler='constant',
             warmup_ratio=0.0, log_interval=50, save_interval=1000)
