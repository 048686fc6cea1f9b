# Alpaca GPT-4 data translated to Chinese (instruction_zh/input_zh/output_zh), from the hub.
datasets = [dict(path='silk-road/alpaca-data-gpt4-chinese', format='alpaca_zh')]
data = dict(max_length=2048)
