# QLoRA: the LoRA schedule on a 4-bit base model. The quantization is a model key, and two
# _base_ files may not both define `model`, so a QLoRA leaf config adds
#     model = dict(quantization=dict(bits=4))   # NF4, double quantization, compute in model.dtype
method = dict(type='lora', r=64, alpha=16, dropout=0.1, target_modules='all-linear')
optim = dict(type='AdamW', lr=2e-4, weight_decay=0.0, max_grad_norm=0.3)
train = dict(engine='mmengine', batch_size=1, grad_accum=16, epochs=3, lr_scheduler='cosine',
             warmup_ratio=0.03, log_interval=10, save_interval=500, save_total_limit=2)
