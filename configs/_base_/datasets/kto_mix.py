# KTO mix 14k (TRL's, on the hub): unpaired prompt / completion / label records.
datasets = [dict(path='trl-lib/kto-mix-14k', format='kto')]
data = dict(max_length=2048, truncation='truncate')
