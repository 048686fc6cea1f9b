_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/datasets/alpaca.py',
    '../_base_/schedules/qlora.py',
]
model = dict(quantization=dict(bits=4))
