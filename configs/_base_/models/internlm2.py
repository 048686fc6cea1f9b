# InternLM2 chat. Its modelling and tokenizer code live in the model repository, so loading
# it runs that remote code: trust_remote_code for the model and the tokenizer.
model = dict(path='internlm/internlm2-chat-7b', dtype='bfloat16', attn_implementation='eager',
             trust_remote_code=True, gradient_checkpointing=True)
tokenizer = dict(trust_remote_code=True)
template = 'internlm2_chat'
