# Self-cognition data shipped with xft: identity questions in English and
# Chinese, answered as {{name}}, developed by {{author}}. Set your own names here.
datasets = [
    dict(path='xft://data/self_cognition.json', format='alpaca',
         placeholders=dict(name='Tuna', author='the xft team')),
]
data = dict(max_length=256)
