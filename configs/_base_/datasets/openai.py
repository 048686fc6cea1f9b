# Your own data in OpenAI's chat fine-tuning format: a JSON Lines file with one
# {"messages": [{"role": ..., "content": ...}, ...]} per line (tool calls allowed).
# Replace the placeholder path, e.g. --cfg-options 'datasets=[dict(path=my.jsonl,format=openai)]'
# or edit a copy made with `xft copy-cfg`.
datasets = [dict(path='data/openai_chat.jsonl', format='openai')]
data = dict(max_length=2048)
