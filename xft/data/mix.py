"""Mix encoded datasets by ratio: each dataset's share of the final samples.

A dataset with ratio r contributes round(r × size) samples (largest remainders,
so the counts add up to size exactly): whole copies of the dataset while it
fits, then a seeded random subset without repetition. So r above a dataset's
natural share up-samples it and r below down-samples it.
"""

import math
import random
from dataclasses import dataclass

from xft.errors import ConfigError

RATIO_TOLERANCE = 1e-6


@dataclass
class MixPart:
    path: str
    available: int  # samples the dataset produced
    used: int  # samples it contributes to the mixture
    ratio: float

    def line(self, total):
        factor = self.used / self.available if self.available else 0.0
        return (f"  {self.path}: {self.used} of {self.available} samples "
                f"(×{factor:.2f}), {100 * self.used / total:.1f}% of the mixture "
                f"(ratio {self.ratio:g})")


def check_ratios(dataset_cfgs, mix_size):
    """ConfigError unless every dataset has a ratio or none has, and they sum to 1."""
    ratios = [d.ratio for d in dataset_cfgs]
    if all(r is None for r in ratios):
        return False
    missing = [i for i, r in enumerate(ratios) if r is None]
    if missing:
        raise ConfigError(f"'datasets[{missing[0]}].ratio' is missing: set a ratio on every "
                          "dataset or on none")
    for i, r in enumerate(ratios):
        if not r > 0:
            raise ConfigError(f"'datasets[{i}].ratio' must be > 0, got {r}")
    if abs(sum(ratios) - 1) > RATIO_TOLERANCE:
        raise ConfigError(f"dataset ratios must sum to 1, they sum to {sum(ratios):g} "
                          f"({' + '.join(f'{r:g}' for r in ratios)})")
    if isinstance(mix_size, int) and mix_size <= 0:
        raise ConfigError(f"'data.mix_size' must be a positive number of samples, got {mix_size}")
    return True


def mixture_size(available, ratios, mix_size):
    """The number of samples in the mixture for a data.mix_size setting."""
    if isinstance(mix_size, int):
        return mix_size
    if mix_size == "sum":
        return sum(available)
    # A dataset of n samples with ratio r supports a mixture of n / r samples
    # without repeating any of its samples.
    supported = [n / r for n, r in zip(available, ratios)]
    if mix_size == "no_upsample":
        return math.floor(min(supported))
    return math.ceil(max(supported))  # no_downsample


def split_counts(size, ratios):
    """Integer counts proportional to ratios that sum to size (largest remainders)."""
    exact = [r * size for r in ratios]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[:size - sum(counts)]:
        counts[i] += 1
    return counts


def mix(sources, ratios, mix_size, seed=0):
    """Mix lists of samples by ratio. Returns (samples, [MixPart]).

    `sources` is a list of (path, samples).
    """
    available = [len(samples) for _, samples in sources]
    size = mixture_size(available, ratios, mix_size)
    mixed, parts = [], []
    rng = random.Random(seed)
    for (path, samples), ratio, count in zip(sources, ratios, split_counts(size, ratios)):
        if count and not samples:
            raise ConfigError(f"{path}: has ratio {ratio:g} but no samples left after filtering")
        copies, rest = divmod(count, len(samples)) if samples else (0, 0)
        mixed += samples * copies
        mixed += [samples[i] for i in sorted(rng.sample(range(len(samples)), rest))]
        parts.append(MixPart(path, len(samples), count, ratio))
    return mixed, parts
