_base_ = [
    '../_base_/models/gemma.py',
    '../_base_/datasets/guanaco.py',
    '../_base_/schedules/qlora.py',
]
model = dict(quantization=dict(bits=4))
