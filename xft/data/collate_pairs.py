"""Batch encoded preference samples (xft.data.encode_pairs) for one forward pass.

PairCollator: B pairs → 2B right-padded rows, the B chosen sides first and then
the B rejected sides (prompt + reply each; labels only on the reply), so the
policy and the reference each score both sides in one forward. Precomputed
reference log-probs, when the samples carry them, become `ref_logps` [2B] in
the same row order.

PackedPairCollator: rows of whole pairs (xft.data.pack.pack_pairs) → the rows
as packed SFT rows are batched (position_ids restart per sequence, no attention
across sequences) plus `sequence_index` [rows, seq]: for each token, its
sequence's place in the unpacked order (the batch's chosen sides 0..P-1, then its
rejected sides P..2P-1; -1 on padding), so per-sequence sums come out in the
PairCollator's order.

LabeledCollator (KTO): B labelled replies → B rows plus `desirable` [B], and the
mismatched rows KTO's KL reference point is estimated from: prompt i followed by
the reply of item i + 1 (mod B) of the same micro-batch, as `kl_input_ids`,
`kl_attention_mask`, `kl_labels`.
"""

import torch

from xft.data.collate import PackedCollator, PadCollator
from xft.data.encode import IGNORE_INDEX
from xft.data.encode_pairs import PAIR_SIDES


def side_row(prompt_ids, ids, labels):
    """One scored sequence: the prompt (untrained) followed by a reply."""
    return {"input_ids": prompt_ids + ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + labels}


class PairCollator:
    def __init__(self, pad_token_id):
        self.pad = PadCollator(pad_token_id)

    def __call__(self, samples):
        rows = [side_row(s["prompt_ids"], s[f"{side}_ids"], s[f"{side}_labels"])
                for side in PAIR_SIDES for s in samples]
        batch = self.pad(rows)
        if "ref_chosen_logps" in samples[0]:
            batch["ref_logps"] = torch.tensor([s[f"ref_{side}_logps"] for side in PAIR_SIDES
                                               for s in samples])
        return batch


class PackedPairCollator:
    def __init__(self, pad_token_id):
        self.pack = PackedCollator(pad_token_id)

    def __call__(self, rows):
        batch = self.pack(rows)
        pairs = [max(row["sequence_ids"]) // 2 + 1 for row in rows]
        total = sum(pairs)
        index = torch.full(batch["input_ids"].shape, -1)
        first = 0  # the batch's number of the row's first pair
        for i, (row, count) in enumerate(zip(rows, pairs)):
            numbers = torch.tensor(row["sequence_ids"])
            index[i, :len(numbers)] = first + numbers // 2 + (numbers % 2) * total
            first += count
        batch["sequence_index"] = index
        return batch


class LabeledCollator:
    def __init__(self, pad_token_id):
        self.pad = PadCollator(pad_token_id)

    def __call__(self, samples):
        batch = self.pad([side_row(s["prompt_ids"], s["completion_ids"], s["completion_labels"])
                          for s in samples])
        batch["desirable"] = torch.tensor([s["label"][0] for s in samples], dtype=torch.bool)
        shifted = samples[1:] + samples[:1]
        kl = self.pad([side_row(s["prompt_ids"], other["completion_ids"],
                                other["completion_labels"])
                       for s, other in zip(samples, shifted)])
        batch.update({f"kl_{key}": value for key, value in kl.items()})
        return batch
