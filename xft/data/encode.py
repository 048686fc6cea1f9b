"""Conversations + template + tokenizer → input_ids and labels.

Each conversation is rendered to one string, the whole string is tokenized once
with character offsets, and a token is trained (label = its id) when it overlaps
a loss span of the rendering; every other label is -100. Labels never depend on
token ids, so a pad token that equals EOS cannot mask the EOS label.

Documents (raw text for pretraining) skip the template: see encode_documents.
"""

from dataclasses import dataclass, field

from xft.errors import ConfigError

IGNORE_INDEX = -100


@dataclass
class EncodeStats:
    samples: int = 0
    dropped_too_long: int = 0
    truncated: int = 0
    dropped_no_label: int = 0
    split_documents: int = 0  # documents longer than max_length, split into pieces
    tokens: int = 0
    label_tokens: int = 0
    lengths: list = field(default_factory=list)
    # Per sample, the index (in the list given to encode) of the item it came from, so
    # held-out samples can be traced back to their records (xft.data.heldout).
    origins: list = field(default_factory=list)

    def merge(self, other, offset=0):
        """Add `other`'s counts; its origins index items `offset` places further on."""
        for name in ("samples", "dropped_too_long", "truncated", "dropped_no_label",
                     "split_documents", "tokens", "label_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.lengths += other.lengths
        self.origins += [offset + i for i in other.origins]


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
        for at, (r, ids, offsets) in enumerate(zip(chunk, batch["input_ids"],
                                                   batch["offset_mapping"]), start=begin):
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
            _add_sample(samples, stats, ids, labels, n_labels, at)
    return samples, stats


def _add_sample(samples, stats, ids, labels, n_labels, origin):
    samples.append({"input_ids": ids, "labels": labels})
    stats.origins.append(origin)
    stats.samples += 1
    stats.tokens += len(ids)
    stats.label_tokens += n_labels
    stats.lengths.append(len(ids))


def encode_documents(documents, tokenizer, max_length, batch_size=1000):
    """Encode raw-text documents for pretraining. Returns (samples, EncodeStats).

    A document is BOS (when the tokenizer has one) + its tokens + EOS, and every
    token is trained except a sample's first, which nothing before it predicts
    (so packed samples never learn to predict one document from the previous).
    A document longer than max_length is split into max_length pieces rather
    than dropped: in pretraining the rest of a long text is still good data.
    Each piece after the first starts with the last token of the piece before,
    as untrained context, so every token but the document's first is trained
    exactly once and no piece is a lone untrainable token. Only the first piece
    starts with BOS and only the last ends with EOS, so the model never learns a
    document boundary that is not there. Each piece is an independent sample;
    split documents are counted.
    """
    if max_length < 2:
        raise ConfigError("data.max_length must be at least 2 for pretraining documents")
    if tokenizer.eos_token_id is None:
        raise ConfigError("pretraining documents need a tokenizer with an EOS token to mark "
                          "where a document ends")
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    samples, stats = [], EncodeStats()
    for begin in range(0, len(documents), batch_size):
        batch = tokenizer(documents[begin:begin + batch_size], add_special_tokens=False)
        for at, body in enumerate(batch["input_ids"], start=begin):
            ids = bos + body + [tokenizer.eos_token_id]
            starts = range(0, max(len(ids) - 1, 1), max_length - 1)
            if len(starts) > 1:
                stats.split_documents += 1
            for start in starts:
                piece = ids[start:start + max_length]
                _add_sample(samples, stats, piece, [IGNORE_INDEX] + piece[1:], len(piece) - 1,
                            at)
    return samples, stats


def _truncate_keeping_end(ids, labels, max_length):
    trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    tail_start = trained[-1] if trained else len(ids) - 1
    tail_start = max(tail_start, len(ids) - max_length)  # a tail can never exceed max_length
    head = max_length - (len(ids) - tail_start)
    return ids[:head] + ids[tail_start:], labels[:head] + labels[tail_start:]
