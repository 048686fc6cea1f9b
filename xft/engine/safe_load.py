"""Loading pickled checkpoints without letting them run code.

Every `.pt`/`.pth`/`.bin` file xft reads (its own MMEngine checkpoints, Trainer's
optimizer and RNG files, DeepSpeed's shards) is loaded with
`torch.load(weights_only=True)` and nothing added to torch's allow-list: torch's
restricted unpickler then builds only tensors, containers, numbers and strings.
Adding any callable to that list (even `getattr`) lets a crafted pickle reach
`eval` through torch's own tensor-rebuild functions, so xft adds none.

MMEngine puts objects of its own into a checkpoint (the message hub's
`HistoryBuffer`s, numpy arrays); xft's checkpoint hook writes those in a plain
form instead (`plain_message_hub`) and rebuilds them on resume
(`restore_message_hub`).
"""

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from xft.errors import XftError

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl")
_PLAIN_BUFFER = "xft_history_buffer"  # marks a HistoryBuffer written as tensors


def _reason(error):
    """One line out of torch's multi-line refusal: the global it would not build."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.rstrip(".")
    return lines[0] if lines else type(error).__name__


def load_weights_only(path, mmap=False):
    """torch.load(weights_only=True) of `path`, nothing allow-listed; a file that needs
    more (code, foreign objects) or is not a torch file is an XftError naming it.

    mmap=True reads only the pickle (tensors stay on disk): the cheap way to check a
    file before a library that loads it itself does.
    """
    path = Path(path)
    mmap = mmap and zipfile.is_zipfile(path)  # the legacy format cannot be mapped
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError,
            TypeError, AttributeError, KeyError, IndexError) as e:
        if "mmengine.logging.history_buffer" in str(e):
            raise XftError(
                f"{path}: written by an older xft that pickled MMEngine's HistoryBuffer "
                "objects, which cannot be loaded without allowing code to run; refused "
                "(see docs/security.md)") from None
        if "inline_container" in str(e):  # torch's zip reader: not one of its files
            raise XftError(f"{path}: not a torch checkpoint file (a zip archive torch did "
                           "not write, or a damaged file)") from None
        raise XftError(f"{path}: refused to load: not a plain tensor checkpoint "
                       f"({_reason(e)})") from None


def check_pickles(folder):
    """Refuse `folder` (a Trainer or DeepSpeed checkpoint) unless every pickle file in it
    loads with weights_only=True; libraries such as Trainer then load them again.
    `training_args.bin` (a pickled TrainingArguments) is never loaded on resume."""
    folder = Path(folder)
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix not in PICKLE_SUFFIXES \
                or path.name == "training_args.bin":
            continue
        if path.name.endswith(("_model_states.pt", "_optim_states.pt")):
            load_deepspeed_shard(path)
        else:
            load_weights_only(path, mmap=True)


def plain_checkpoint(checkpoint):
    """A copy of MMEngine's checkpoint dict with the message hub in plain form and numpy
    scalars (MMEngine's runtime info holds some) as Python numbers."""
    if "message_hub" in checkpoint:
        checkpoint = dict(checkpoint, message_hub=plain_message_hub(checkpoint["message_hub"]))
    return _without_numpy(dict(checkpoint))


def _without_numpy(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if type(value) in (dict, OrderedDict):
        return type(value)((k, _without_numpy(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return type(value)(_without_numpy(v) for v in value)
    return value


def plain_message_hub(state):
    """MMEngine's message-hub state with each HistoryBuffer as a dict of tensors."""
    from mmengine.logging.history_buffer import HistoryBuffer

    scalars = {}
    for key, value in state["log_scalars"].items():
        if isinstance(value, HistoryBuffer):
            logs, counts = value.data
            value = {_PLAIN_BUFFER: True, "max_length": value.max_length,
                     "log_history": torch.from_numpy(np.array(logs)),
                     "count_history": torch.from_numpy(np.array(counts))}
        scalars[key] = value
    return dict(state, log_scalars=scalars)


def restore_message_hub(state):
    """Inverse of plain_message_hub, in place (MMEngine then loads `state`)."""
    from mmengine.logging.history_buffer import HistoryBuffer

    for key, value in state["log_scalars"].items():
        if isinstance(value, dict) and value.get(_PLAIN_BUFFER):
            state["log_scalars"][key] = HistoryBuffer(
                value["log_history"].numpy(), value["count_history"].numpy(),
                value["max_length"])


def plain_numpy_rng(state):
    """np.random.get_state() with its key array as a list (np.random.set_state takes it)."""
    name, keys, *rest = state
    return (name, keys.tolist(), *rest)


def make_trainer_rng_file_plain(path):
    """Rewrite Trainer's `rng_state*.pth` (numpy's generator state as an array, which
    plain weights_only=True refuses) with that array as a list.

    The file was written by this process a moment earlier, so it is read with the
    numpy allow-list Trainer itself loads it with; Trainer's loader accepts the result.
    """
    from transformers.trainer_pt_utils import safe_globals

    from xft.engine.checkpoint_files import atomic_torch_save

    with safe_globals():
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state.get("numpy"), tuple):
        atomic_torch_save(dict(state, numpy=plain_numpy_rng(state["numpy"])), path)


def load_deepspeed_shard(path):
    """A DeepSpeed `*_states.pt` shard with weights_only=True.

    ZeRO optimizer shards hold three DeepSpeed objects besides tensors: the stage as a
    ZeroStageEnum (an int enum), the LossScaler (a plain record of numbers) and, under
    ZeRO-1/2, `fragment_address` records (a dataclass of two ints). Only these classes
    are allowed, for these files only: building them runs no code beyond an enum lookup
    and attribute assignment, and they give a pickle no way to reach other callables
    (no getattr, no functions).
    """
    import importlib

    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum

    # The module, not the package attribute: deepspeed.utils re-exports a function
    # under the name `tensor_fragment`.
    fragment = importlib.import_module("deepspeed.utils.tensor_fragment").fragment_address
    with torch.serialization.safe_globals([ZeroStageEnum, LossScaler, fragment]):
        return load_weights_only(path)
