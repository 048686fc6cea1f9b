# Incremental pretraining, stage 2 (docs/incremental_pretraining.md): instruction-tune the
# stage-1 model (its adapter merged with `xft convert merge`; the merged directory holds
# the extended tokenizer) on Chinese Alpaca data. The embeddings keep training.
_base_ = [
    '../_base_/models/mistral_v3.py',
    '../_base_/datasets/alpaca_zh.py',
    '../_base_/schedules/lora.py',
]
model = dict(path='work_dirs/mistral_7b_v0_3_zh_vocab_lora_pretrain_e1/merged')
method = dict(modules_to_save=['embed_tokens', 'lm_head'])
