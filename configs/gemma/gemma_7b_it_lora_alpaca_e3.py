_base_ = [
    '../_base_/models/gemma.py',
    '../_base_/datasets/alpaca.py',
    '../_base_/schedules/lora.py',
]
