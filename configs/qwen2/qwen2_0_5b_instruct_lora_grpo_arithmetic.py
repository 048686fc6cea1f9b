# GRPO with LoRA on Qwen2-0.5B-Instruct (docs/rl.md): the exact-answer reward on prompts with a
# reference answer (the toy sums here; any SFT-style data whose last assistant turn is the
# reference works). The KL reference is the base model (the adapter disabled).
_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/schedules/lora.py',
]
model = dict(path='Qwen/Qwen2-0.5B-Instruct')
objective = dict(type='grpo', rewards=[dict(type='exact_answer', field='answer')],
                 group_size=8, max_new_tokens=256, temperature=1.0, beta=0.04,
                 epsilon_high=0.28, loss_normalization='token')
datasets = [dict(path='xft://data/arithmetic_prompts.jsonl', format='qa')]
data = dict(max_length=512)
optim = dict(lr=1e-5)
train = dict(batch_size=2, grad_accum=4, epochs=1)
