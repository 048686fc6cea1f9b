# Full fine-tuning: every weight trains, so a low lr and a little weight decay.
method = dict(type='full')
optim = dict(type='AdamW', lr=2e-5, weight_decay=0.01, max_grad_norm=1.0)
train = dict(engine='mmengine', batch_size=1, grad_accum=16, epochs=3, lr_scheduler='cosine',
             warmup_ratio=0.03, log_interval=10, save_interval=500, save_total_limit=2)
