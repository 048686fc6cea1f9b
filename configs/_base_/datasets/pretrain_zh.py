# Chinese raw text for incremental pretraining after a vocabulary extension
# (docs/incremental_pretraining.md). PLACEHOLDER path: your own corpus, one {"text": ...}
# record a line. Documents longer than max_length are split into pieces, not dropped.
datasets = [dict(path='data/zh_corpus.jsonl', format='pretrain')]
data = dict(max_length=1024)
