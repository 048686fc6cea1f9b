_base_ = [
    '../_base_/models/yi.py',
    '../_base_/datasets/alpaca_zh.py',
    '../_base_/schedules/lora.py',
]
