# Stage 2 of the RL demo (docs/rl.md): GRPO on the toy sums with the exact-answer reward,
# starting from stage 1's model (tiny_llama_full_arithmetic_sft; set model.path to its
# work_dir/hf). Full fine-tuning, so beta=0 (no reference model needed).
_base_ = [
    '../_base_/models/tiny_llama.py',
    '../_base_/schedules/full.py',
]
objective = dict(type='grpo', rewards=[dict(type='exact_answer', field='answer')],
                 group_size=8, max_new_tokens=6, temperature=1.0, beta=0.0,
                 loss_normalization='token')
datasets = [dict(path='xft://data/arithmetic_prompts.jsonl', format='qa')]
data = dict(max_length=64)
optim = dict(lr=1e-3)
train = dict(batch_size=8, grad_accum=1, max_steps=40, lr_scheduler='constant',
             warmup_ratio=0.0, log_interval=10, save_interval=1000)
