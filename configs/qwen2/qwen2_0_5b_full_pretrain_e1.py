_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/datasets/pretrain.py',
    '../_base_/schedules/full.py',
]
# The base model: documents skip the chat template ('default' is only what chat uses).
model = dict(path='Qwen/Qwen2-0.5B')
template = 'default'
train = dict(epochs=1)
