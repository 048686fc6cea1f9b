_base_ = [
    '../_base_/models/chatglm3.py',
    '../_base_/datasets/alpaca.py',
    '../_base_/schedules/qlora.py',
]
model = dict(quantization=dict(bits=4))
