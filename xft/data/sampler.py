"""The order of training batches for a whole run, fixed by the seed.

Every engine draws batches from this one sampler, so the same seed gives the
same data order everywhere, and a resumed run can skip exactly the batches it
already trained on. Each epoch is a fresh permutation (seed + epoch); the last
batch of an epoch may be smaller than batch_size.
"""

import torch
from torch.utils.data import Sampler


class RunBatchSampler(Sampler):
    def __init__(self, num_samples, batch_size, total_batches, shuffle=True, seed=0):
        self.num_samples, self.batch_size = num_samples, batch_size
        self.total_batches, self.shuffle, self.seed = total_batches, shuffle, seed

    def _epoch_order(self, epoch):
        if not self.shuffle:
            return list(range(self.num_samples))
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_samples, generator=generator).tolist()

    def __iter__(self):
        produced, epoch = 0, 0
        while True:
            order = self._epoch_order(epoch)
            for start in range(0, self.num_samples, self.batch_size):
                if produced == self.total_batches:
                    return
                yield order[start:start + self.batch_size]
                produced += 1
            epoch += 1

    def __len__(self):
        return self.total_batches
