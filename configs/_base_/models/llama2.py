# Llama 2 chat (gated on the hub). The base model 'meta-llama/Llama-2-7b-hf' has no chat
# format: leaves that use it set template = 'alpaca' (instructions) or 'default'.
model = dict(path='meta-llama/Llama-2-7b-chat-hf', dtype='bfloat16', attn_implementation='sdpa',
             gradient_checkpointing=True)
template = 'llama2_chat'
