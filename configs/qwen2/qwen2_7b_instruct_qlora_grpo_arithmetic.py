# GRPO with QLoRA on Qwen2-7B-Instruct, sized for one 8-24 GB card (docs/rl.md, memory notes):
# 4-bit base, one prompt × 8 completions per micro-batch, KL to the base model (adapter off).
_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/schedules/qlora.py',
]
model = dict(quantization=dict(bits=4))
objective = dict(type='grpo', rewards=[dict(type='exact_answer', field='answer')],
                 group_size=8, max_new_tokens=256, temperature=1.0, beta=0.04,
                 epsilon_high=0.28, loss_normalization='token')
datasets = [dict(path='xft://data/arithmetic_prompts.jsonl', format='qa')]
data = dict(max_length=512)
method = dict(dropout=0.0)
optim = dict(lr=1e-5)
train = dict(batch_size=1, grad_accum=8, epochs=1)
