_base_ = [
    '../_base_/models/llama2.py',
    '../_base_/datasets/pretrain.py',
    '../_base_/schedules/lora.py',
]
# The base model: documents skip the chat template ('default' is only what chat uses).
model = dict(path='meta-llama/Llama-2-7b-hf')
template = 'default'
train = dict(epochs=1)
