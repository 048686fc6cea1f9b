"""Which token ids end an assistant turn, as a template trains it.

Exported artifacts list these in `generation_config.json` (`eos_token_id`), so
stock `generate()`, pipelines, lm-eval and vLLM stop where training taught the
model to stop, not only at the base model's EOS.
"""

from xft.errors import ConfigError, RecordError

SAMPLE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def turn_end_ids(template, tokenizer):
    """Ids of the special tokens that close a trained reply, plus the template's stop words.

    Found by rendering a one-turn conversation and reading the trained text after
    the reply ('<|im_end|>', '<|eot_id|>', '</s>', Phi-3's '<|end|>' and closing
    '<|endoftext|>'...), so it holds for `auto` too. Plain-text markers (MOSS's
    '<eom>') are several tokens and cannot be an eos id; chat matches them as text.
    """
    ids = []
    for word in getattr(template, "stop_words", ()):
        ids += tokenizer.encode(word, add_special_tokens=False)[:1]
    try:
        rendered = template.render(SAMPLE)
    except (ConfigError, RecordError):  # a template that cannot render the sample
        return _unique(ids)
    start, end = rendered.loss_spans[-1] if rendered.loss_spans else (0, 0)
    reply = rendered.text.find(SAMPLE[-1]["content"], start, end)
    if reply >= 0:
        tail = rendered.text[reply + len(SAMPLE[-1]["content"]):end]
        special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
        ids += [i for i in tokenizer.encode(tail, add_special_tokens=False) if i in special]
    return _unique(ids)


def _unique(ids):
    return list(dict.fromkeys(ids))
