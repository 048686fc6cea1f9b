"""Whole accumulation windows as loader items, for engines that need them at once.

To normalise by the label tokens of a whole optimizer step, the MMEngine
adapter must see all micro-batches of the step before the first backward. So
its DataLoader yields one item per optimizer step: the list of that step's
collated micro-batches, in RunBatchSampler's order (the same order HF's
Trainer sees micro-batch by micro-batch). Collation runs in the loader's
workers, as usual.
"""

from torch.utils.data import Dataset, Sampler


class AccumulationWindows(Sampler):
    """Groups consecutive micro-batches of a batch sampler into lists of `grad_accum`."""

    def __init__(self, batch_sampler, grad_accum):
        if len(batch_sampler) % grad_accum:
            raise ValueError(f"{len(batch_sampler)} micro-batches do not split into windows "
                             f"of {grad_accum}")
        self.batch_sampler, self.grad_accum = batch_sampler, grad_accum

    def __iter__(self):
        window = []
        for batch in self.batch_sampler:
            window.append(batch)
            if len(window) == self.grad_accum:
                yield window
                window = []

    def __len__(self):
        return len(self.batch_sampler) // self.grad_accum


class WindowDataset(Dataset):
    # MMEngine's train loop hands a dataset's metainfo to its visualizer (and warns when
    # there is none); xft draws nothing there.
    metainfo = None

    """dataset[window] → one collated batch per micro-batch of the window."""

    def __init__(self, dataset, collator):
        self.dataset, self.collator = dataset, collator

    def __getitem__(self, window):
        return [self.collator([self.dataset[i] for i in batch]) for batch in window]

    def __len__(self):
        return len(self.dataset)


def window_loader(dataset, collator, batch_sampler, grad_accum, num_workers=0):
    from torch.utils.data import DataLoader

    # batch_size=None: the sampler's items (windows) go to __getitem__ unbatched.
    return DataLoader(WindowDataset(dataset, collator),
                      sampler=AccumulationWindows(batch_sampler, grad_accum),
                      batch_size=None, collate_fn=_as_is, num_workers=num_workers)


def _as_is(window):
    return window
