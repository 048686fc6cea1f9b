# DPO (sigmoid) with LoRA; the reference is the base model (the adapter disabled).
# To continue from an SFT adapter, add method = dict(init_adapter='work_dirs/<sft>/hf'):
# that adapter then is both the starting point and the reference.
_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/datasets/ultrafeedback.py',
    '../_base_/schedules/dpo_lora.py',
]
objective = dict(type='dpo', beta=0.1, loss_type='sigmoid')
