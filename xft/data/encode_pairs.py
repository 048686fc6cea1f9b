"""Preference pairs (and KTO's labelled replies) + template + tokenizer → token ids.

Each side is rendered as one whole conversation, prompt + reply, by the same
ChatTemplate as SFT and tokenized in one piece with offsets (xft.data.encode),
so its ids are exactly what the model's `apply_chat_template(prompt + [reply])`
gives. Only the reply carries labels (its content and end-of-turn marker; the
prompt's earlier assistant turns are context). The prompt is the tokens before
the first trained one, the same ids on both sides, stored once:

    {"prompt_ids": [...],                      shared by both sides
     "chosen_ids": [...], "chosen_labels": [...],       the rest of each side:
     "rejected_ids": [...], "rejected_labels": [...]}   -100 on untrained tokens

A side is prompt_ids + chosen_ids. Splitting after tokenizing (not tokenizing
the prompt and the reply apart) means no token is cut in two and no BPE merge
across the boundary is lost. When the two replies tokenize differently at the
boundary (one starts with a space that merges with the template's space, the
other does not), the prompt is the ids the two sides share, and the differing
template tokens start that side's rest, untrained: each side stays exactly the
official tokenization, and the loss covers exactly the reply.

Over-long pairs have one policy for the pair: `drop`, or `truncate` the prompt
from the left (both sides keep the same prompt) so that the longer side fits.
Replies are never cut: a pair whose longer reply alone does not fit is dropped,
so no pair ever reaches training without reply tokens. Both are counted.
"""

from dataclasses import dataclass, field

from xft.data.encode import IGNORE_INDEX, labels_from_spans
from xft.errors import ConfigError, RecordError

TRUNCATION = ("drop", "truncate")


@dataclass
class PairStats:
    pairs: int = 0  # samples kept (pairs, or labelled replies for KTO)
    dropped_too_long: int = 0
    truncated: int = 0  # prompts cut from the left to fit max_length
    tokens: int = 0  # tokens of the kept samples, the shared prompt counted once
    label_tokens: int = 0  # trained reply tokens, both sides
    lengths: list = field(default_factory=list)  # longest side of each kept sample

    def merge(self, other):
        for name in ("pairs", "dropped_too_long", "truncated", "tokens", "label_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.lengths += other.lengths


def reply_messages(prompt, reply):
    """The conversation of one side: earlier assistant turns untrained, the reply trained."""
    context = [dict(m, loss=False) if m["role"] == "assistant" else m for m in prompt]
    return context + [dict(reply, loss=True)]


def encode_pairs(pairs, template, tokenizer, max_length, truncation="drop", batch_size=500):
    """Encode PreferencePairs. Returns (samples, PairStats); see the module docstring.

    A pair that cannot be encoded raises PairError, a RecordError naming the
    pair's position in `pairs` (the caller maps it to its record).
    """
    return _encode(pairs, ("chosen", "rejected"), template, tokenizer, max_length, truncation,
                   batch_size)


def encode_labeled(items, template, tokenizer, max_length, truncation="drop", batch_size=500):
    """Encode LabeledReplies (KTO): {"prompt_ids", "completion_ids", "completion_labels",
    "label"} per item. Returns (samples, PairStats)."""
    return _encode(items, ("completion",), template, tokenizer, max_length, truncation,
                   batch_size)


def _encode(items, sides, template, tokenizer, max_length, truncation, batch_size):
    if truncation not in TRUNCATION:
        raise ConfigError(f"truncation of preference data must be one of {list(TRUNCATION)}, "
                          f"got {truncation!r}")
    samples, stats = [], PairStats()
    for begin in range(0, len(items), batch_size):
        chunk = items[begin:begin + batch_size]
        encoded = {side: _tokenize_sides(template, tokenizer, chunk, side) for side in sides}
        for n, item in enumerate(chunk):
            try:
                sample = _split(item, {side: encoded[side][n] for side in sides})
            except RecordError as e:
                raise PairError(begin + n, e) from None
            _fit(sample, sides, max_length, truncation, stats, samples)
    return samples, stats


class PairError(RecordError):
    """A RecordError of the item at `index` of the encoded list."""

    def __init__(self, index, error):
        self.index = index
        super().__init__(error.reason, error.field)


def _tokenize_sides(template, tokenizer, items, side):
    attr = "reply" if side == "completion" else side
    rendered = [template.render(reply_messages(item.prompt, getattr(item, attr)))
                for item in items]
    batch = tokenizer([r.text for r in rendered], add_special_tokens=False,
                      return_offsets_mapping=True, verbose=False)
    return [(ids, labels_from_spans(ids, offsets, r.loss_spans))
            for r, ids, offsets in zip(rendered, batch["input_ids"], batch["offset_mapping"])]


def _split(item, encoded):
    """{prompt_ids, <side>_ids, <side>_labels...}: the sides' common ids before any trained
    token are the prompt, the rest of each side follows it."""
    starts = {}
    for side, (ids, labels) in encoded.items():
        starts[side] = next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), None)
        if starts[side] is None:
            raise RecordError("the reply renders to no trained token", field=side)
    first = next(iter(encoded.values()))[0]
    prompt_length = min(starts.values())
    for ids, _ in encoded.values():
        prompt_length = next((i for i in range(prompt_length) if ids[i] != first[i]),
                             prompt_length)
    if prompt_length == 0:
        raise RecordError("the rendered prompt is empty: nothing predicts the reply's first "
                          "token", field="prompt")
    sample = {"prompt_ids": first[:prompt_length]}
    for side, (ids, labels) in encoded.items():
        sample[f"{side}_ids"], sample[f"{side}_labels"] = ids[prompt_length:], labels[prompt_length:]
    if hasattr(item, "desirable"):
        sample["label"] = item.desirable
    return sample


def _fit(sample, sides, max_length, truncation, stats, samples):
    longest_reply = max(len(sample[f"{side}_ids"]) for side in sides)
    prompt = sample["prompt_ids"]
    if len(prompt) + longest_reply > max_length:
        room = max_length - longest_reply  # prompt tokens that fit beside the longer reply
        if truncation == "drop" or room < 1:
            stats.dropped_too_long += 1
            return
        sample["prompt_ids"] = prompt = prompt[len(prompt) - room:]
        stats.truncated += 1
    samples.append(sample)
    stats.pairs += 1
    stats.tokens += len(prompt) + sum(len(sample[f"{side}_ids"]) for side in sides)
    stats.label_tokens += sum(sum(1 for x in sample[f"{side}_labels"] if x != IGNORE_INDEX)
                              for side in sides)
    stats.lengths.append(len(prompt) + longest_reply)
