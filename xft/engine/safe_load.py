"""The allow-list for loading MMEngine checkpoints with torch.load(weights_only=True).

MMEngine 0.10.7 stores its message hub (HistoryBuffer objects holding numpy
arrays) in every checkpoint and loads checkpoints with torch's default, which is
weights_only=True since torch 2.6. Rather than turning that safety off, resume
runs inside a context that allows exactly these extra types.
"""

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer


def checkpoint_safe_globals():
    return [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        np._core.multiarray._reconstruct,
        np._core.multiarray.scalar,
        # numpy's concrete dtype classes (Float64DType, Int64DType, ...)
        *{type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"},
        # A HistoryBuffer pickles its statistics methods as getattr(buffer, 'mean').
        # The weights-only unpickler still calls only allow-listed callables, so
        # an attribute fetched this way cannot be called into anything new.
        getattr,
    ]


def allow_checkpoint_globals():
    """Context manager: torch.load may build the types MMEngine checkpoints contain."""
    return torch.serialization.safe_globals(checkpoint_safe_globals())
