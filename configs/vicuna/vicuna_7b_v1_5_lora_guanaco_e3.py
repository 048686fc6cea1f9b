_base_ = [
    '../_base_/models/vicuna.py',
    '../_base_/datasets/guanaco.py',
    '../_base_/schedules/lora.py',
]
