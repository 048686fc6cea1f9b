# ChatGLM3-6B: remote modelling and tokenizer code (trust_remote_code for both).
# Its code predates the sdpa switch of transformers: eager attention.
model = dict(path='THUDM/chatglm3-6b', dtype='bfloat16', attn_implementation='eager',
             trust_remote_code=True, gradient_checkpointing=True)
tokenizer = dict(trust_remote_code=True)
template = 'chatglm3'
