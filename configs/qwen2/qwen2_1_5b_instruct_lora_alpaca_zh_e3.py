_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/datasets/alpaca_zh.py',
    '../_base_/schedules/lora.py',
]
model = dict(path='Qwen/Qwen2-1.5B-Instruct')
