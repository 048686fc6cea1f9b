# The README quickstart: teach the embedded tiny model who it is, with LoRA, on CPU.
_base_ = [
    '../_base_/models/tiny_llama.py',
    '../_base_/datasets/self_cognition.py',
    '../_base_/schedules/lora_short.py',
]
method = dict(r=32, alpha=64)
optim = dict(lr=3e-3)
train = dict(batch_size=8, epochs=40, warmup_ratio=0.05)
