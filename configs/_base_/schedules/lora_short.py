# A short LoRA schedule for small data: high lr, cosine decay, a little warmup,
# on MMEngine's Runner, logging every 10 steps.
method = dict(type='lora', r=16, alpha=32, dropout=0.0, target_modules='all-linear')
optim = dict(type='AdamW', lr=2e-4, weight_decay=0.0, max_grad_norm=1.0)
train = dict(engine='mmengine', batch_size=4, grad_accum=1, epochs=3, lr_scheduler='cosine',
             warmup_ratio=0.03, log_interval=10, save_interval=500, save_total_limit=2)
