# Yi chat (Llama architecture, ChatML turns, <|startoftext|> BOS).
model = dict(path='01-ai/Yi-6B-Chat', dtype='bfloat16', attn_implementation='sdpa',
             gradient_checkpointing=True)
template = 'yi_chat'
