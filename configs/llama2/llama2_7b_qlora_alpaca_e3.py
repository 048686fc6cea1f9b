_base_ = [
    '../_base_/models/llama2.py',
    '../_base_/datasets/alpaca.py',
    '../_base_/schedules/qlora.py',
]
# The base model learns the Alpaca prompt format.
model = dict(path='meta-llama/Llama-2-7b-hf', quantization=dict(bits=4))
template = 'alpaca'
