_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/datasets/moss.py',
    '../_base_/schedules/qlora.py',
]
# qwen2_chat renders tool calls (Qwen2.5's format), which MOSS plugin calls become.
model = dict(quantization=dict(bits=4))
train = dict(epochs=1)
