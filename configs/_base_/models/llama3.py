# Llama 3 instruct (gated on the hub: accept Meta's licence, then `huggingface-cli login`).
model = dict(path='meta-llama/Meta-Llama-3-8B-Instruct', dtype='bfloat16',
             attn_implementation='sdpa', gradient_checkpointing=True)
template = 'llama3_chat'
