"""Batch encoded preference samples (xft.data.encode_pairs) for one forward pass.

PairCollator: B pairs → 2B right-padded rows, the B chosen sides first and then
the B rejected sides (prompt + reply each; labels only on the reply), so the
policy and the reference each score both sides in one forward. Precomputed
reference log-probs, when the samples carry them, become `ref_logps` [2B] in
the same row order.

LabeledCollator (KTO): B labelled replies → B rows plus `desirable` [B], and the
mismatched rows KTO's KL reference point is estimated from: prompt i followed by
the reply of item i + 1 (mod B) of the same micro-batch, as `kl_input_ids`,
`kl_attention_mask`, `kl_labels`.
"""

import torch

from xft.data.collate import PadCollator
from xft.data.encode import IGNORE_INDEX


def side_row(prompt_ids, ids, labels):
    """One scored sequence: the prompt (untrained) followed by a reply."""
    return {"input_ids": prompt_ids + ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + labels}


class PairCollator:
    def __init__(self, pad_token_id):
        self.pad = PadCollator(pad_token_id)

    def __call__(self, samples):
        rows = [side_row(s["prompt_ids"], s[f"{side}_ids"], s[f"{side}_labels"])
                for side in ("chosen", "rejected") for s in samples]
        batch = self.pad(rows)
        if "ref_chosen_logps" in samples[0]:
            batch["ref_logps"] = torch.tensor([s[f"ref_{side}_logps"] for side in
                                               ("chosen", "rejected") for s in samples])
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
