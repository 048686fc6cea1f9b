"""Hold out part of each training dataset for validation.

The split is made per source file, on its encoded samples, before mixing and
packing: a held-out sample can never reach training, not even as an
up-sampled copy, and every source is represented in the validation set in
proportion to its size (stratified by source). Which samples are held out is
drawn from the experiment's seed and the source's position in the list, so
the same config always holds out the same samples.

`test_size` is a fraction of a source's samples (0 < x < 1, rounded up) or a
count. A count in `data.test_size` is shared among the sources that have no
test_size of their own, in proportion to their sizes.
"""

import math
import random
from dataclasses import dataclass

from xft.data.mix import split_counts
from xft.errors import ConfigError


@dataclass
class SplitPart:
    path: str
    available: int  # samples the source produced
    held_out: int  # of which go to validation
    indices: tuple = ()  # which ones (positions in the source's sample list), ascending

    def line(self):
        return (f"  {self.path}: {self.held_out} of {self.available} samples held out, "
                f"{self.available - self.held_out} left for training")


def held_out_counts(sizes, own_sizes, default_size):
    """Samples to hold out of each source, from per-source and default test_size values."""
    counts = [None] * len(sizes)
    shared = []  # sources that take their share of a default count
    for i, (n, own) in enumerate(zip(sizes, own_sizes)):
        size = own if own is not None else default_size
        if size is None:
            counts[i] = 0
        elif isinstance(size, float):
            counts[i] = math.ceil(size * n)
        elif own is not None:
            counts[i] = size
        else:
            shared.append(i)
    if shared:
        total = sum(sizes[i] for i in shared)
        ratios = [sizes[i] / total if total else 0 for i in shared]
        for i, count in zip(shared, split_counts(min(default_size, total), ratios)):
            counts[i] = count
    return counts


def split_sources(sources, dataset_cfgs, default_size, seed):
    """Split each (path, samples) source into training and held-out samples.

    Returns (training sources, held-out samples, [SplitPart]); ConfigError when a
    source would be left with no training sample.
    """
    counts = held_out_counts([len(s) for _, s in sources], [d.test_size for d in dataset_cfgs],
                             default_size)
    training, held_out, parts = [], [], []
    for index, ((path, samples), count) in enumerate(zip(sources, counts)):
        if count and count >= len(samples):
            raise ConfigError(f"{path}: test_size holds out {count} of its {len(samples)} "
                              "samples, leaving none to train on")
        rng = random.Random(f"xft-split:{seed}:{index}")
        chosen = set(rng.sample(range(len(samples)), count))
        training.append((path, [s for i, s in enumerate(samples) if i not in chosen]))
        held_out += [s for i, s in enumerate(samples) if i in chosen]
        parts.append(SplitPart(path, len(samples), count, tuple(sorted(chosen))))
    return training, held_out, parts
