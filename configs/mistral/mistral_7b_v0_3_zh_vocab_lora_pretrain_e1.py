# Incremental pretraining, stage 1 (docs/incremental_pretraining.md): the Mistral-7B-v0.3
# base model with a Chinese-extended tokenizer (`xft vocab merge`) learns the new tokens on
# raw Chinese text. The new embedding rows start at the mean of their base pieces' rows;
# LoRA trains the linear layers while the whole embeddings and head train and are saved
# with the adapter.
_base_ = [
    '../_base_/models/mistral_v3.py',
    '../_base_/datasets/pretrain_zh.py',
    '../_base_/schedules/lora.py',
]
model = dict(path='mistralai/Mistral-7B-v0.3', resize_vocab=dict(init='subword_mean'))
tokenizer = dict(path='work_dirs/mistral_zh_tokenizer')  # written by `xft vocab merge`
method = dict(modules_to_save=['embed_tokens', 'lm_head'])
train = dict(epochs=1)
