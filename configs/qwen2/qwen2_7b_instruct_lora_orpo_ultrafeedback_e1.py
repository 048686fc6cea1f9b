# ORPO: SFT and preference in one stage, no reference model (lambda = beta).
_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/datasets/ultrafeedback.py',
    '../_base_/schedules/dpo_lora.py',
]
objective = dict(type='orpo', beta=0.1)
optim = dict(lr=8e-5)
