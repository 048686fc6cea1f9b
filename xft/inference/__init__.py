"""Inference pieces below both the engines and the tools: chat generation with the
training template (chat) and the evaluation chat run during training (chat_eval)."""
