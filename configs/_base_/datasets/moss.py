# MOSS-003 SFT data with plugin calls. fnlp/moss-003-sft-data ships zipped JSON Lines that
# `datasets` cannot read directly: download and unzip moss-003-sft-plugin-data into data/
# and point the path at the .jsonl (one conversation per line).
datasets = [dict(path='data/moss-003-sft-plugin.jsonl', format='moss')]
data = dict(max_length=2048)
