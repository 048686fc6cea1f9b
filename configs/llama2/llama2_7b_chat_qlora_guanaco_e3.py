_base_ = [
    '../_base_/models/llama2.py',
    '../_base_/datasets/guanaco.py',
    '../_base_/schedules/qlora.py',
]
model = dict(quantization=dict(bits=4))
