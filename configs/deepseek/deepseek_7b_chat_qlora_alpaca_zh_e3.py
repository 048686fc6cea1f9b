_base_ = [
    '../_base_/models/deepseek.py',
    '../_base_/datasets/alpaca_zh.py',
    '../_base_/schedules/qlora.py',
]
model = dict(quantization=dict(bits=4))
