# DPO on CPU in a couple of minutes: the embedded tiny model learns to prefer its own
# identity over a wrong one. A fifth of the pairs is held out; eval_rewards/accuracies
# (the fraction of held-out pairs whose chosen reply gets the higher reward) is
# measured every 5 steps and selects the exported weights.
_base_ = [
    '../_base_/models/tiny_llama.py',
    '../_base_/datasets/self_cognition_pairs.py',
    '../_base_/schedules/lora_short.py',
]
objective = dict(type='dpo', beta=0.1, loss_type='sigmoid')
data = dict(test_size=0.2)
method = dict(r=32, alpha=64)
optim = dict(lr=1e-3)
train = dict(batch_size=4, epochs=2, warmup_ratio=0.05, log_interval=1, eval_interval=5,
             save_best='eval_rewards/accuracies', export_best=True)
