_base_ = [
    '../_base_/models/zephyr.py',
    '../_base_/datasets/alpaca.py',
    '../_base_/schedules/qlora.py',
]
model = dict(quantization=dict(bits=4))
