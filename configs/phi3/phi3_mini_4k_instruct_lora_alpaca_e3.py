_base_ = [
    '../_base_/models/phi3.py',
    '../_base_/datasets/alpaca.py',
    '../_base_/schedules/lora.py',
]
