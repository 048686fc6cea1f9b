# Qwen2 instruct models (Qwen/Qwen2-{0.5B,1.5B,7B,72B}-Instruct), ChatML with tool calls.
# Leaves pick another size with model = dict(path='Qwen/Qwen2-0.5B-Instruct').
model = dict(path='Qwen/Qwen2-7B-Instruct', dtype='bfloat16', attn_implementation='sdpa',
             gradient_checkpointing=True)
template = 'qwen2_chat'
