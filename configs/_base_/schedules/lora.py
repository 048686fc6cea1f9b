# LoRA on every linear layer: 16 samples per optimizer step, 3 epochs, cosine decay.
method = dict(type='lora', r=64, alpha=16, dropout=0.1, target_modules='all-linear')
optim = dict(type='AdamW', lr=2e-4, weight_decay=0.0, max_grad_norm=1.0)
train = dict(engine='mmengine', batch_size=1, grad_accum=16, epochs=3, lr_scheduler='cosine',
             warmup_ratio=0.03, log_interval=10, save_interval=500, save_total_limit=2)
