_base_ = [
    '../_base_/models/phi3.py',
    '../_base_/datasets/openai.py',
    '../_base_/schedules/qlora.py',
]
model = dict(quantization=dict(bits=4))
