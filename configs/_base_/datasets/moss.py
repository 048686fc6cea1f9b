# MOSS-003 SFT conversations without plugins (English and Chinese). fnlp/moss-003-sft-data
# ships zipped JSON Lines that `datasets` cannot read directly: download
# moss-003-sft-no-tools.jsonl.zip, unzip it into data/ (one conversation per line).
# The plugin data (moss-003-sft-plugin-data) carries inner thoughts, which only the `moss`
# template renders (template = 'moss': MOSS's own tags); other templates refuse those records.
datasets = [dict(path='data/moss-003-sft-no-tools.jsonl', format='moss')]
data = dict(max_length=2048)
