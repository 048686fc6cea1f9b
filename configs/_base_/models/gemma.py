# Gemma instruct (gated on the hub). Gemma's template has no system role: data with
# system prompts needs another family. Leaves pick a size with model = dict(path=...).
model = dict(path='google/gemma-7b-it', dtype='bfloat16', attn_implementation='sdpa',
             gradient_checkpointing=True)
template = 'gemma'
