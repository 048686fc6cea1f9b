# KTO on unpaired desirable / undesirable replies; the reference is the adapter disabled.
# KTO's KL estimate pairs each prompt with another reply of its micro-batch: keep
# train.batch_size above 1.
_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/datasets/kto_mix.py',
    '../_base_/schedules/dpo_lora.py',
]
objective = dict(type='kto', beta=0.1, desirable_weight=1.0, undesirable_weight=1.0)
train = dict(batch_size=4, grad_accum=4)
