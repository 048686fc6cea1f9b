# The reward model of the PPO demo (docs/rl.md): stage 1's model (tiny_llama_full_arithmetic_sft;
# set model.path to its work_dir/hf) with a score head, trained on pairs whose chosen answer is
# the clean sum and whose rejected one has the habit ("7 or 2") or is wrong ("8"). The held-out
# pairs (xft://data/arithmetic_pairs_heldout.jsonl) measure it: `xft eval DIR/hf --reward ...`.
_base_ = [
    '../_base_/models/tiny_llama.py',
    '../_base_/schedules/full.py',
]
objective = dict(type='reward')
datasets = [dict(path='xft://data/arithmetic_pairs.jsonl', format='trl_pairs')]
data = dict(max_length=64)
optim = dict(lr=1e-3)
train = dict(batch_size=16, grad_accum=1, max_steps=40, lr_scheduler='constant',
             warmup_ratio=0.0, log_interval=10, save_interval=1000)
