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
so no pair ever reaches training without reply tokens. Both are counted in the
same EncodeStats as SFT samples (a sample is a pair).
"""

from xft.data.encode import IGNORE_INDEX, EncodeStats, labels_from_spans
from xft.errors import ConfigError

TRUNCATION = ("drop", "truncate")
PAIR_SIDES = ("chosen", "rejected")
LABELED_SIDES = ("completion",)


def reply_messages(prompt, reply):
    """The conversation of one side: earlier assistant turns untrained, the reply trained."""
    context = [dict(m, loss=False) if m["role"] == "assistant" else m for m in prompt]
    return context + [dict(reply, loss=True)]


def render_sides(item, template):
    """{side: Rendered} of a PreferencePair (chosen, rejected) or a LabeledReply (completion).

    RecordError when the template cannot render the record (the caller names it).
    """
    if hasattr(item, "desirable"):
        return {"completion": template.render(reply_messages(item.prompt, item.reply)),
                "label": item.desirable}
    return {side: template.render(reply_messages(item.prompt, getattr(item, side)))
            for side in PAIR_SIDES}


def encode_pairs(pairs, template, tokenizer, max_length, truncation="drop"):
    """Render and encode PreferencePairs. Returns (samples, EncodeStats); see the module doc."""
    return encode_rendered_sides([render_sides(p, template) for p in pairs], tokenizer,
                                 max_length, truncation)


def encode_labeled(items, template, tokenizer, max_length, truncation="drop"):
    """Render and encode LabeledReplies (KTO): {"prompt_ids", "completion_ids",
    "completion_labels", "label": [1 desirable / 0 not]} per item. Returns (samples,
    EncodeStats)."""
    return encode_rendered_sides([render_sides(i, template) for i in items], tokenizer,
                                 max_length, truncation)


def encode_rendered_sides(rendered, tokenizer, max_length, truncation="drop", batch_size=500):
    """Encode render_sides() outputs in batches. Returns (samples, EncodeStats).

    EncodeStats.samples counts pairs (or labelled replies); `truncated`: prompts cut
    from the left; `dropped_no_label`: records whose rendered prompt is empty, so that
    nothing predicts the reply's first token; `lengths`: each sample's longer side.
    """
    if truncation not in TRUNCATION:
        raise ConfigError(f"truncation of preference data must be one of {list(TRUNCATION)}, "
                          f"got {truncation!r}")
    samples, stats = [], EncodeStats()
    for begin in range(0, len(rendered), batch_size):
        chunk = rendered[begin:begin + batch_size]
        sides = [side for side in chunk[0] if side != "label"] if chunk else []
        encoded = {side: _tokenize(tokenizer, [r[side] for r in chunk]) for side in sides}
        for n, item in enumerate(chunk):
            sample = _split({side: encoded[side][n] for side in sides})
            if sample is None:
                stats.dropped_no_label += 1
                continue
            if "label" in item:  # a list like every field (the dataset cache stores arrays)
                sample["label"] = [int(item["label"])]
            _fit(sample, sides, max_length, truncation, stats, samples)
    return samples, stats


def _tokenize(tokenizer, rendered):
    batch = tokenizer([r.text for r in rendered], add_special_tokens=False,
                      return_offsets_mapping=True, verbose=False)
    return [(ids, labels_from_spans(ids, offsets, r.loss_spans))
            for r, ids, offsets in zip(rendered, batch["input_ids"], batch["offset_mapping"])]


def _split(encoded):
    """{prompt_ids, <side>_ids, <side>_labels...}: the sides' common ids before any trained
    token are the prompt, the rest of each side follows it. None when there is no prompt
    (or, which a checked record never has, a side without a trained token)."""
    starts = [next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), None)
              for _, labels in encoded.values()]
    if None in starts:
        return None
    first = next(iter(encoded.values()))[0]
    prompt_length = min(starts)
    for ids, _ in encoded.values():
        prompt_length = next((i for i in range(prompt_length) if ids[i] != first[i]),
                             prompt_length)
    if prompt_length == 0:
        return None
    sample = {"prompt_ids": first[:prompt_length]}
    for side, (ids, labels) in encoded.items():
        sample[f"{side}_ids"] = ids[prompt_length:]
        sample[f"{side}_labels"] = labels[prompt_length:]
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
    stats.samples += 1
    stats.tokens += len(prompt) + sum(len(sample[f"{side}_ids"]) for side in sides)
    stats.label_tokens += sum(sum(1 for x in sample[f"{side}_labels"] if x != IGNORE_INDEX)
                              for side in sides)
    stats.lengths.append(len(prompt) + longest_reply)
