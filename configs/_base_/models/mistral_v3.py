# Mistral 7B Instruct v0.3 (32768-token vocabulary, [INST] turns with tool calls).
model = dict(path='mistralai/Mistral-7B-Instruct-v0.3', dtype='bfloat16',
             attn_implementation='sdpa', gradient_checkpointing=True)
template = 'mistral_v3'
