_base_ = [
    '../_base_/models/gemma.py',
    '../_base_/datasets/alpaca.py',
    '../_base_/schedules/full.py',
]
model = dict(path='google/gemma-2b-it')
