"""Read the trained weights out of a training checkpoint, whatever engine wrote it.

The engines and the names of their checkpoints are in xft.engine.engines; a
checkpoint is recognised here from what is on disk (a copy may be renamed):

mmengine   a `.pth` file (iter_N.pth): MMEngine's dict whose `state_dict` holds
           the weights of xft's ObjectiveModel (keys `lm.<model key>`).
hf         a Trainer `checkpoint-N/` folder: the model's own save_pretrained
           output, a PEFT adapter (`adapter_model.safetensors`) or a full model
           (`model.safetensors`, possibly sharded).
deepspeed  a DeepSpeed checkpoint folder (a `latest` file naming a tag folder with
           `*_model_states.pt`), or one tag folder itself (MMEngine's DeepSpeed
           strategy saves `iter_N.pth/` as a tag folder without `latest`):
           consolidated to fp32 with DeepSpeed's public
           `get_fp32_state_dict_from_zero_checkpoint`. A Trainer folder written
           under DeepSpeed holds both; the DeepSpeed states win, as under ZeRO-3
           the model files may hold only placeholders.

`read_checkpoint` returns a `Checkpoint`: the weights keyed as the built model's
`state_dict()` (kind 'module') or as PEFT saves an adapter (kind 'peft').
"""

import json
from dataclasses import dataclass
from pathlib import Path

from xft.errors import XftError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_WEIGHTS = "model.safetensors"
MODEL_INDEX = "model.safetensors.index.json"
DEEPSPEED_LATEST = "latest"  # DeepSpeed writes the tag of the newest save here


@dataclass
class Checkpoint:
    path: Path
    source: str  # 'mmengine' | 'hf' | 'deepspeed'
    kind: str  # 'module': keys as model.state_dict(); 'peft': keys as in a saved adapter
    state: dict


def checkpoint_source(path):
    """'mmengine', 'hf' or 'deepspeed' for what `path` holds; XftError otherwise."""
    path = Path(path)
    if not path.exists():
        raise XftError(f"checkpoint {path} does not exist")
    if path.is_file():
        if path.suffix == ".pth":
            return "mmengine"
        raise XftError(f"checkpoint {path}: a file must be an MMEngine iter_N.pth; for a "
                       "Hugging Face Trainer or DeepSpeed checkpoint pass its folder")
    if (path / DEEPSPEED_LATEST).is_file() or any(path.glob("*/*_model_states.pt")) \
            or any(path.glob("*_model_states.pt")):
        return "deepspeed"
    if any((path / name).is_file() for name in (ADAPTER_WEIGHTS, MODEL_WEIGHTS, MODEL_INDEX)):
        return "hf"
    raise XftError(f"checkpoint {path}: not a checkpoint xft can read (expected an MMEngine "
                   f"iter_N.pth, a Trainer checkpoint-N folder with {ADAPTER_WEIGHTS} or "
                   f"{MODEL_WEIGHTS}, or a DeepSpeed folder with a '{DEEPSPEED_LATEST}' file)")


def read_checkpoint(path):
    path = Path(path)
    source = checkpoint_source(path)
    if source == "mmengine":
        return Checkpoint(path, source, "module", _strip_prefix(_read_mmengine(path), "lm."))
    if source == "deepspeed":
        state = _read_deepspeed(path)
        # MMEngine's DeepSpeed strategy wraps xft's ObjectiveModel (keys 'lm.'); Trainer wraps
        # the model itself.
        return Checkpoint(path, source, "module", _strip_prefix(state, "lm."))
    if (path / ADAPTER_WEIGHTS).is_file():
        from safetensors.torch import load_file

        return Checkpoint(path, source, "peft", load_file(str(path / ADAPTER_WEIGHTS)))
    return Checkpoint(path, source, "module", read_model_weights(path))


def read_model_weights(folder):
    """All tensors of a save_pretrained model folder (single file or sharded safetensors)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / MODEL_INDEX).is_file():
        index = json.loads((folder / MODEL_INDEX).read_text(encoding="utf-8"))
        files = sorted(set(index["weight_map"].values()))
    elif (folder / MODEL_WEIGHTS).is_file():
        files = [MODEL_WEIGHTS]
    else:
        raise XftError(f"{folder} holds no {MODEL_WEIGHTS} or {MODEL_INDEX}")
    state = {}
    for name in files:
        if not (folder / name).is_file():
            raise XftError(f"{folder / MODEL_INDEX} names {name}, which is missing")
        state.update(load_file(str(folder / name)))
    return state


def _read_mmengine(path):
    import torch

    from xft.engine.safe_load import allow_checkpoint_globals

    with allow_checkpoint_globals():
        try:
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # truncated file, not a torch file...
            raise XftError(f"cannot read MMEngine checkpoint {path}: {e}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise XftError(f"{path} is not an MMEngine checkpoint (no 'state_dict')")
    return checkpoint["state_dict"]


def _read_deepspeed(path):
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError:
        raise XftError(f"{path} is a DeepSpeed checkpoint; reading it needs deepspeed "
                       "(pip install deepspeed)") from None
    # A tag folder: DeepSpeed reads it as tag `name` of its parent folder.
    folder, tag = (path.parent, path.name) if any(path.glob("*_model_states.pt")) else (path, None)
    try:
        return get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=tag)
    except (FileNotFoundError, ValueError) as e:
        raise XftError(f"cannot read DeepSpeed checkpoint {path}: {e}") from None


def _strip_prefix(state, prefix):
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix):]: value for key, value in state.items()}
    return state
