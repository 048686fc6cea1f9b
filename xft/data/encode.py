"""Conversations + template + tokenizer → input_ids and labels.

Each conversation is rendered to one string, the whole string is tokenized once
with character offsets, and a token is trained (label = its id) when it overlaps
a loss span of the rendering; every other label is -100. Labels never depend on
token ids, so a pad token that equals EOS cannot mask the EOS label.
"""

from dataclasses import dataclass, field

IGNORE_INDEX = -100


@dataclass
class EncodeStats:
    samples: int = 0
    dropped_too_long: int = 0
    truncated: int = 0
    dropped_no_label: int = 0
    tokens: int = 0
    label_tokens: int = 0
    lengths: list = field(default_factory=list)

    def merge(self, other):
        for name in ("samples", "dropped_too_long", "truncated", "dropped_no_label", "tokens",
                     "label_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.lengths += other.lengths


def labels_from_spans(input_ids, offsets, spans):
    """Label each token that overlaps one of the sorted [start, end) spans."""
    labels = [IGNORE_INDEX] * len(input_ids)
    s = 0
    for i, (start, end) in enumerate(offsets):
        while s < len(spans) and spans[s][1] <= start:
            s += 1
        if s == len(spans):
            break
        if end > start and start < spans[s][1] and end > spans[s][0]:
            labels[i] = input_ids[i]
    return labels


def encode_conversations(conversations, template, tokenizer, max_length, truncation="drop",
                         batch_size=1000):
    """Render and encode conversations. Returns (samples, EncodeStats)."""
    return encode_rendered([template.render(c) for c in conversations], tokenizer, max_length,
                           truncation, batch_size)


def encode_rendered(rendered, tokenizer, max_length, truncation="drop", batch_size=1000):
    """Encode rendered conversations (templates.Rendered) in batches. Returns (samples, EncodeStats).

    truncation='drop' drops a sample longer than max_length; 'truncate' keeps the
    sample's tail from its last trained token (the final end-of-turn marker) on,
    and fills the rest of max_length from the start, so a truncated sample still
    teaches the model to stop.
    """
    samples, stats = [], EncodeStats()
    for begin in range(0, len(rendered), batch_size):
        chunk = rendered[begin:begin + batch_size]
        # verbose=False: no warning about the model's max length; max_length is handled below.
        batch = tokenizer([r.text for r in chunk], add_special_tokens=False,
                          return_offsets_mapping=True, verbose=False)
        for r, ids, offsets in zip(chunk, batch["input_ids"], batch["offset_mapping"]):
            labels = labels_from_spans(ids, offsets, r.loss_spans)
            if len(ids) > max_length:
                if truncation == "drop":
                    stats.dropped_too_long += 1
                    continue
                ids, labels = _truncate_keeping_end(ids, labels, max_length)
                stats.truncated += 1
            n_labels = sum(1 for x in labels if x != IGNORE_INDEX)
            if n_labels == 0:
                stats.dropped_no_label += 1
                continue
            samples.append({"input_ids": ids, "labels": labels})
            stats.samples += 1
            stats.tokens += len(ids)
            stats.label_tokens += n_labels
            stats.lengths.append(len(ids))
    return samples, stats


def _truncate_keeping_end(ids, labels, max_length):
    trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    tail_start = trained[-1] if trained else len(ids) - 1
    tail_start = max(tail_start, len(ids) - max_length)  # a tail can never exceed max_length
    head = max_length - (len(ids) - tail_start)
    return ids[:head] + ids[tail_start:], labels[:head] + labels[tail_start:]
