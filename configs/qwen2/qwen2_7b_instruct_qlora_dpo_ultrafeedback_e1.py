# DPO with QLoRA (4-bit base): the reference is the same 4-bit base, adapter disabled.
_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/datasets/ultrafeedback.py',
    '../_base_/schedules/dpo_lora.py',
]
model = dict(quantization=dict(bits=4))
objective = dict(type='dpo', beta=0.1, loss_type='sigmoid')
