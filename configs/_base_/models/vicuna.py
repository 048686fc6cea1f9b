# Vicuna v1.5 (a Llama 2 fine-tune), 'USER: ... ASSISTANT: ...' turns.
model = dict(path='lmsys/vicuna-7b-v1.5', dtype='bfloat16', attn_implementation='sdpa',
             gradient_checkpointing=True)
template = 'vicuna'
