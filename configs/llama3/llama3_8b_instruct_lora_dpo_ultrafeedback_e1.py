# DPO (sigmoid) with LoRA on Llama 3 Instruct.
_base_ = [
    '../_base_/models/llama3.py',
    '../_base_/datasets/ultrafeedback.py',
    '../_base_/schedules/dpo_lora.py',
]
objective = dict(type='dpo', beta=0.1, loss_type='sigmoid')
