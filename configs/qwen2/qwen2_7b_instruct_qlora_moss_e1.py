_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/datasets/moss.py',
    '../_base_/schedules/qlora.py',
]
# MOSS plugin calls become tool calls, which qwen2_chat renders (Qwen2.5's format).
model = dict(quantization=dict(bits=4))
train = dict(epochs=1)
