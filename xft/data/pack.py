"""Pack encoded samples into rows of at most max_length tokens.

A packed row is several samples laid end to end, with `position_ids` that
restart at 0 for each sample. Given position_ids and no attention mask (and no
KV cache), transformers' mask builder (masking_utils.find_packed_sequence_indices)
turns the restarts into a block-diagonal causal mask, so no token attends to
another sample (eager and sdpa alike).

Samples are assigned to rows by best-fit decreasing: longest first, each into
the fullest row that still has room. Samples of equal length are ordered by a
seeded shuffle, so the seed decides which samples share a row.
"""

import bisect
import random
from dataclasses import dataclass

from xft.data.collate_pairs import side_row
from xft.data.encode import IGNORE_INDEX
from xft.data.encode_pairs import PAIR_SIDES


@dataclass
class PackStats:
    samples: int = 0
    rows: int = 0
    tokens: int = 0  # real tokens in all rows
    max_length: int = 0

    @property
    def efficiency(self):
        """Real tokens / slots (rows × max_length)."""
        return self.tokens / (self.rows * self.max_length) if self.rows else 0.0

    def line(self):
        return (f"packing: {self.samples} samples → {self.rows} rows of ≤{self.max_length} "
                f"tokens, efficiency {100 * self.efficiency:.2f}% "
                f"({self.tokens} tokens in {self.rows * self.max_length} slots)")


def assign_rows(lengths, max_length, seed=0):
    """Best-fit decreasing: a list of rows, each a list of sample indices."""
    if any(n > max_length for n in lengths):
        raise ValueError("a sample is longer than max_length; truncate or drop it before packing")
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda i: -lengths[i])  # stable: the shuffle breaks ties
    rows = []
    # (free slots, row index) of every row that still has room, sorted.
    free = []
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))  # the row with the least room that fits
        if at == len(free):
            rows.append([i])
            room, row = max_length - n, len(rows) - 1
        else:
            room, row = free.pop(at)
            rows[row].append(i)
            room -= n
        if room:
            bisect.insort(free, (room, row))
    return rows


def pack_samples(samples, max_length, seed=0):
    """Packed rows {'input_ids', 'labels', 'position_ids'} and PackStats.

    Each sample's first label is set to IGNORE_INDEX: the loss shifts labels by
    one, so that label would be predicted from the previous sample's last token.
    Run alone, a sample's first token is never a target either, so a packed row
    trains exactly the targets of its samples run one by one.
    """
    lengths = [len(s["input_ids"]) for s in samples]
    rows = []
    for members in assign_rows(lengths, max_length, seed):
        input_ids, labels, position_ids = [], [], []
        for i in members:
            sample = samples[i]
            input_ids += sample["input_ids"]
            labels += [IGNORE_INDEX] + sample["labels"][1:]
            position_ids += range(len(sample["input_ids"]))
        rows.append({"input_ids": input_ids, "labels": labels, "position_ids": position_ids})
    stats = PackStats(samples=len(samples), rows=len(rows), tokens=sum(lengths),
                      max_length=max_length)
    return rows, stats


def pack_pairs(samples, max_length, seed=0):
    """Preference pairs (xft.data.encode_pairs) packed whole into rows: (rows, PackStats).

    A pair's two sides (prompt + chosen, prompt + rejected) lie in the same row as two
    sequences, each with position_ids from 0, so a micro-batch always holds both sides
    of its pairs. `sequence_ids` numbers each token's sequence in the row: 2k for the
    chosen side of the row's k-th pair, 2k + 1 for its rejected side
    (xft.data.collate_pairs.PackedPairCollator turns them into batch positions). A row
    holds up to 2 × max_length tokens, the room of one pair whose sides each fill
    max_length, as a padded batch gives it.
    """
    lengths = [2 * len(s["prompt_ids"]) + sum(len(s[f"{side}_ids"]) for side in PAIR_SIDES)
               for s in samples]
    rows = []
    for members in assign_rows(lengths, 2 * max_length, seed):
        row = {"input_ids": [], "labels": [], "position_ids": [], "sequence_ids": []}
        for k, i in enumerate(members):
            for number, side in enumerate(PAIR_SIDES):
                sequence = side_row(samples[i]["prompt_ids"], samples[i][f"{side}_ids"],
                                    samples[i][f"{side}_labels"])
                n = len(sequence["input_ids"])
                row["input_ids"] += sequence["input_ids"]
                row["labels"] += sequence["labels"]  # starts with the untrained prompt
                row["position_ids"] += range(n)
                row["sequence_ids"] += [2 * k + number] * n
        rows.append(row)
    stats = PackStats(samples=len(samples), rows=len(rows), tokens=sum(lengths),
                      max_length=2 * max_length)
    return rows, stats
