_base_ = [
    '../_base_/models/llama2.py',
    '../_base_/datasets/alpaca.py',
    '../_base_/schedules/lora.py',
]
