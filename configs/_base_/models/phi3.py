# Phi-3 mini instruct (3.8B), <|user|>/<|assistant|> turns ended by <|end|>.
model = dict(path='microsoft/Phi-3-mini-4k-instruct', dtype='bfloat16',
             attn_implementation='sdpa', gradient_checkpointing=True)
template = 'phi3'
