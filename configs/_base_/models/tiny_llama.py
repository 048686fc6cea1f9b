# xft's embedded default model: a 0.8M-parameter Llama with a byte-level BPE
# tokenizer, shipped in the package (no download). Random weights: it knows
# nothing until fine-tuned. Rebuild with tools/make_tiny_model.py.
model = dict(path='xft://tiny-llama', dtype='float32', attn_implementation='sdpa')
template = 'chatml'
