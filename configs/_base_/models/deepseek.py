# DeepSeek LLM chat (Llama architecture, 'User: ... Assistant: ...' turns).
model = dict(path='deepseek-ai/deepseek-llm-7b-chat', dtype='bfloat16',
             attn_implementation='sdpa', gradient_checkpointing=True)
template = 'deepseek_chat'
