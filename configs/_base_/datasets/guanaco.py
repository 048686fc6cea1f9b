# OpenAssistant's best conversations in Guanaco's '### Human: ... ### Assistant: ...' text.
datasets = [dict(path='timdettmers/openassistant-guanaco', format='guanaco')]
data = dict(max_length=2048)
