# Preference training with LoRA: 16 pairs per optimizer step, one epoch, a small learning
# rate with warmup (the policy starts as the reference and should move away slowly).
method = dict(type='lora', r=16, alpha=32, dropout=0.05, target_modules='all-linear')
optim = dict(type='AdamW', lr=5e-5, weight_decay=0.0, max_grad_norm=1.0)
train = dict(engine='mmengine', batch_size=2, grad_accum=8, epochs=1, lr_scheduler='cosine',
             warmup_ratio=0.1, log_interval=10, save_interval=500, save_total_limit=2)
