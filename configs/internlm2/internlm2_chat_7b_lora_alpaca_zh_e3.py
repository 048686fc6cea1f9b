_base_ = [
    '../_base_/models/internlm2.py',
    '../_base_/datasets/alpaca_zh.py',
    '../_base_/schedules/lora.py',
]
