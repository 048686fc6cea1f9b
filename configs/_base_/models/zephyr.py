# Zephyr 7B beta (a Mistral 7B fine-tune), <|user|>/<|assistant|> turns ended by EOS.
model = dict(path='HuggingFaceH4/zephyr-7b-beta', dtype='bfloat16', attn_implementation='sdpa',
             gradient_checkpointing=True)
template = 'zephyr'
