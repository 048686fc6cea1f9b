# Preference pairs shipped with xft: the self-cognition questions answered as {{name}} by
# {{author}} (chosen) or as a wrong identity, Marlin by the Reef lab (rejected).
datasets = [
    dict(path='xft://data/self_cognition_pairs.json', format='alpaca_pairs',
         placeholders=dict(name='Tuna', author='the xft team')),
]
data = dict(max_length=256)
