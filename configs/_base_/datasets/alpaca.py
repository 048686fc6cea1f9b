# Stanford Alpaca: 52k English instructions (instruction/input/output), from the hub.
datasets = [dict(path='tatsu-lab/alpaca', format='alpaca')]
data = dict(max_length=2048)
