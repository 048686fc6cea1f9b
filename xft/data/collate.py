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


class PadCollator:
    def __init__(self, pad_token_id):
        self.pad_token_id = pad_token_id

    def __call__(self, samples):
        longest = max(len(s["input_ids"]) for s in samples)
        batch = len(samples)
        input_ids = torch.full((batch, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, longest), dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample["input_ids"])
            input_ids[row, :n] = torch.tensor(sample["input_ids"])
            labels[row, :n] = torch.tensor(sample["labels"])
            attention_mask[row, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class PackedCollator:
    def __init__(self, pad_token_id):
        self.pad_token_id = pad_token_id

    def __call__(self, rows):
        longest = max(len(r["input_ids"]) for r in rows)
        batch = len(rows)
        input_ids = torch.full((batch, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.arange(longest).repeat(batch, 1)  # padding: a block from 0
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[i, :n] = torch.tensor(row["input_ids"])
            labels[i, :n] = torch.tensor(row["labels"])
            position_ids[i, :n] = torch.tensor(row["position_ids"])
            position_ids[i, n:] -= n
        return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}


def collator_for(experiment, tokenizer):
    """The collator that matches the dataset built for this experiment."""
    cls = PackedCollator if experiment.data.pack else PadCollator
    return cls(tokenizer.pad_token_id)
