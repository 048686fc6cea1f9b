# Llama 3.1 instruct (gated on the hub: accept Meta's licence, then `huggingface-cli login`).
# The same template serves Llama 3.2 and 3.3 instruct: set model.path to one of them.
model = dict(path='meta-llama/Llama-3.1-8B-Instruct', dtype='bfloat16',
             attn_implementation='sdpa', gradient_checkpointing=True)
template = 'llama3_1'
