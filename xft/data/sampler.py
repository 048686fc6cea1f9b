"""The order of training batches for a whole run, fixed by the seed.

Every engine draws batches from this one sampler, so the same seed gives the
same data order everywhere, and a resumed run can skip exactly the batches it
already trained on. Each epoch is a fresh permutation (seed + epoch); the last
batch of an epoch may be smaller than batch_size.

With several data-parallel ranks, each micro-step takes one *global* batch of
`batch_size × world_size` samples from the order and rank r trains on its
every world_size-th sample starting at r. So N ranks × micro-batch b see, per
micro-step, exactly the samples one process × micro-batch N·b sees. A global
batch at the end of an epoch with fewer samples than ranks is topped up with
the first samples of that epoch's order, so that no rank gets an empty batch.
"""

import torch
from torch.utils.data import Sampler


class RunBatchSampler(Sampler):
    """Micro-batches (lists of sample indices) of the whole run.

    `total_batches` counts the micro-batches of one rank. `rank=None` yields every
    rank's micro-batch of each micro-step in rank order (the stream a data loader
    shards by taking every world_size-th batch, as Accelerate does); a rank number
    yields only that rank's micro-batches.
    """

    def __init__(self, num_samples, batch_size, total_batches, shuffle=True, seed=0,
                 world_size=1, rank=None):
        self.num_samples, self.batch_size = num_samples, batch_size
        self.total_batches, self.shuffle, self.seed = total_batches, shuffle, seed
        self.world_size, self.rank = world_size, rank

    def _epoch_order(self, epoch):
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def _global_batches(self):
        produced, epoch, size = 0, 0, self.batch_size * self.world_size
        while True:
            order = self._epoch_order(epoch)
            for start in range(0, self.num_samples, size):
                if produced == self.total_batches:
                    return
                batch = order[start:start + size]
                if len(batch) < self.world_size:
                    batch += order[:self.world_size - len(batch)]
                yield batch
                produced += 1
            epoch += 1

    def __iter__(self):
        ranks = range(self.world_size) if self.rank is None else [self.rank]
        for batch in self._global_batches():
            for rank in ranks:
                yield batch[rank::self.world_size]

    def __len__(self):
        return self.total_batches * (self.world_size if self.rank is None else 1)
