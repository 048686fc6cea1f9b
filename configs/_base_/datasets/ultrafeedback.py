# UltraFeedback binarized (TRL's copy on the hub): chosen / rejected conversations with an
# implicit prompt (their common leading messages). Over-long pairs keep their replies and
# lose the start of the prompt.
datasets = [dict(path='trl-lib/ultrafeedback_binarized', format='trl_pairs')]
data = dict(max_length=2048, truncation='truncate')
