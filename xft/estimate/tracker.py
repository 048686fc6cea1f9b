"""Live tensor bytes over a stretch of code, counted per storage.

torch.distributed._tools.mem_tracker.MemTracker does this too, but it attributes
memory to modules through its own module hooks, which it keys on module
identity while PEFT and gradient checkpointing re-enter modules; xft needs the
bytes by *role* (weights, gradients, optimizer states, activations, loss
buffer), so a small dispatch mode it is.

Every tensor an operator returns belongs to a storage; a storage is counted
once, when first seen, and uncounted when Python frees it (storages keep one
Python object, so a weakref finalizer fires exactly then). Works the same on
real and fake tensors: fake tensors report the bytes a real one would hold.
"""

import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary


@dataclass
class Block:
    nbytes: int
    role: str  # what the bytes are for; may be renamed once known (e.g. 'gradients')
    born: int  # the tracker's clock when it was counted
    died: int = None  # ... and when it was freed


class LiveBytes(TorchDispatchMode):
    """Counts storages created under it; `peak` and the blocks alive at the peak.

    `phase` is the role given to new storages; the caller moves it along the
    step (activations → loss → backward → optimizer).
    """

    def __init__(self):
        super().__init__()
        self.blocks = WeakIdKeyDictionary()
        self.history = []  # every block, to find those alive at the peak afterwards
        self.live = self.peak = 0
        self.clock = self.peak_clock = 0
        self.phase = "other"

    def add(self, tensor, role):
        """Count a tensor that existed before tracking started (weights, buffers)."""
        return self._track(tensor, role)

    def block(self, tensor):
        return self.blocks.get(tensor.untyped_storage())

    def _track(self, tensor, role):
        storage = tensor.untyped_storage()
        block = self.blocks.get(storage)
        if block is not None:
            return block
        self.clock += 1
        block = Block(storage.nbytes(), role, self.clock)
        self.blocks[storage] = block
        self.history.append(block)
        weakref.finalize(storage, self._free, block)
        self.live += block.nbytes
        if self.live > self.peak:
            self.peak, self.peak_clock = self.live, self.clock
        return block

    def _free(self, block):
        self.clock += 1
        block.died = self.clock
        self.live -= block.nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._track(leaf, self.phase)
        return out

    def peak_by_role(self):
        """{role: bytes} of the storages alive at the peak, with their final roles."""
        roles = {}
        for block in self.history:
            if block.born <= self.peak_clock and (block.died is None
                                                  or block.died > self.peak_clock):
                roles[block.role] = roles.get(block.role, 0) + block.nbytes
        return roles
