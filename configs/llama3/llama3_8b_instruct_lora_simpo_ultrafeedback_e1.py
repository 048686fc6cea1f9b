# SimPO: length-normalised rewards with a target margin gamma, no reference model.
_base_ = [
    '../_base_/models/llama3.py',
    '../_base_/datasets/ultrafeedback.py',
    '../_base_/schedules/dpo_lora.py',
]
objective = dict(type='simpo', beta=2.0, gamma=0.5)
