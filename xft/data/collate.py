"""Batch samples of different lengths for the model and the loss.

PadCollator: right-pad ids, mask padding out of attention and loss.
PackedCollator: rows packed by xft.data.pack carry position_ids that restart at
0 for each sample; they get NO attention_mask, because transformers builds the
block-diagonal causal mask from position_ids only when there is none. Padding
at a row's end gets positions that restart at 0 too, so it forms a block of its
own that no real token attends to.
"""

import torch

from xft.data.encode import IGNORE_INDEX


def _pad_ids_and_labels(samples, pad_token_id):
    """Right-padded input_ids and labels tensors, and each sample's length."""
    lengths = [len(s["input_ids"]) for s in samples]
    shape = (len(samples), max(lengths))
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    for row, (sample, n) in enumerate(zip(samples, lengths)):
        input_ids[row, :n] = torch.tensor(sample["input_ids"])
        labels[row, :n] = torch.tensor(sample["labels"])
    return input_ids, labels, lengths


class PadCollator:
    def __init__(self, pad_token_id):
        self.pad_token_id = pad_token_id

    def __call__(self, samples):
        input_ids, labels, lengths = _pad_ids_and_labels(samples, self.pad_token_id)
        attention_mask = torch.zeros_like(input_ids)
        for row, n in enumerate(lengths):
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class PackedCollator:
    def __init__(self, pad_token_id):
        self.pad_token_id = pad_token_id

    def __call__(self, rows):
        input_ids, labels, lengths = _pad_ids_and_labels(rows, self.pad_token_id)
        batch, longest = input_ids.shape
        position_ids = torch.arange(longest).repeat(batch, 1)  # padding: a block from 0
        for i, (row, n) in enumerate(zip(rows, lengths)):
            position_ids[i, :n] = torch.tensor(row["position_ids"])
            position_ids[i, n:] -= n
        return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}

