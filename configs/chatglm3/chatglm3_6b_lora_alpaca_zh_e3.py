_base_ = [
    '../_base_/models/chatglm3.py',
    '../_base_/datasets/alpaca_zh.py',
    '../_base_/schedules/lora.py',
]
