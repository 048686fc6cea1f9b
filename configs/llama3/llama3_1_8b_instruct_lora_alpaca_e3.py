_base_ = [
    '../_base_/models/llama3_1.py',
    '../_base_/datasets/alpaca.py',
    '../_base_/schedules/lora.py',
]
