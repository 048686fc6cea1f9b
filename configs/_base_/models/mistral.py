# Mistral 7B Instruct v0.2 ([INST] turns, system folded into the first one).
model = dict(path='mistralai/Mistral-7B-Instruct-v0.2', dtype='bfloat16',
             attn_implementation='sdpa', gradient_checkpointing=True)
template = 'mistral'
