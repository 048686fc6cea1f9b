# OpenAI-format conversations, tool calls included (one call per reply: Llama 3.1's
# template renders no parallel calls; see docs/templates.md).
_base_ = [
    '../_base_/models/llama3_1.py',
    '../_base_/datasets/openai.py',
    '../_base_/schedules/qlora.py',
]
model = dict(quantization=dict(bits=4))
