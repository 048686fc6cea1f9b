_base_ = [
    '../_base_/models/zephyr.py',
    '../_base_/datasets/openai.py',
    '../_base_/schedules/lora.py',
]
