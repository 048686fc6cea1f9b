# Continued pretraining on raw text ({"text": ...} records): TinyStories from the hub.
# Documents longer than max_length are split into pieces, not dropped.
datasets = [dict(path='roneneldan/TinyStories', format='pretrain')]
data = dict(max_length=2048)
