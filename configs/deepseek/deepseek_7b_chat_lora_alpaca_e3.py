_base_ = [
    '../_base_/models/deepseek.py',
    '../_base_/datasets/alpaca.py',
    '../_base_/schedules/lora.py',
]
