"""Read the trained weights out of a training checkpoint, whatever engine wrote it.

The engines and the names of their checkpoints are in xft.engine.engines; a
checkpoint is recognised here from what is on disk (a copy may be renamed):

mmengine   a `.pth` file (iter_N.pth): MMEngine's dict whose `state_dict` holds
           the weights of xft's ObjectiveModel (keys `lm.<model key>`).
hf         a Trainer `checkpoint-N/` folder: the model's own save_pretrained
           output, a PEFT adapter (`adapter_model.safetensors`) or a full model
           (`model.safetensors`, possibly sharded). A full model is loaded by
           transformers, so its weights get the names the model class uses:
           save_pretrained may store other names (GPT-NeoX saves its head as
           `embed_out`, the class calls it `lm_head`), and only the class's own
           key mapping knows them.
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


def read_checkpoint(path, kind="causal_lm"):
    """The checkpoint's weights (`kind`: the model kind it trained, xft.model.build)."""
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
    return Checkpoint(path, source, "module", read_saved_model(path, kind))


def read_saved_model(folder, kind="causal_lm"):
    """The weights of a save_pretrained model folder keyed as its model class's
    state_dict(): transformers loads the folder (safetensors only) and applies the
    class's own key mapping. Without a config.json, the files' keys as they are."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        return read_model_weights(folder)
    from xft.model.build import load_causal_lm

    return load_causal_lm(str(folder), "float32", kind=kind).state_dict()


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
    from xft.engine.safe_load import load_weights_only

    checkpoint = load_weights_only(path)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise XftError(f"{path} is not an MMEngine checkpoint (no 'state_dict')")
    return checkpoint["state_dict"]


def _read_deepspeed(path):
    try:
        from deepspeed.utils import zero_to_fp32
    except ImportError:
        raise XftError(f"{path} is a DeepSpeed checkpoint; reading it needs deepspeed "
                       "(pip install deepspeed)") from None
    # A tag folder (MMEngine's DeepSpeed strategy saves iter_N.pth/ as one), or a folder
    # whose `latest` file names the tag.
    if any(path.glob("*_model_states.pt")):
        tag_dir = path
    else:
        latest = path / DEEPSPEED_LATEST
        if not latest.is_file():
            raise XftError(f"cannot read DeepSpeed checkpoint {path}: no '{DEEPSPEED_LATEST}' file")
        tag_dir = path / latest.read_text(encoding="utf-8").strip()
    return _consolidate_zero(zero_to_fp32, tag_dir)


def _consolidate_zero(zero_to_fp32, tag_dir):
    """fp32 weights of a ZeRO 1/2/3 tag folder.

    DeepSpeed's get_fp32_state_dict_from_zero_checkpoint loads the shards with
    weights_only=False, so a crafted shard would run code. Here the shards are read
    with load_deepspeed_shard (weights_only=True) and only DeepSpeed's merging of the
    flat fp32 partitions, which loads nothing, is reused.
    """
    from xft.engine.safe_load import load_deepspeed_shard

    model_files = sorted(tag_dir.glob("*_model_states.pt"), key=lambda p: zero_to_fp32.natural_keys(p.name))
    optim_files = sorted(tag_dir.glob("*_optim_states.pt"), key=lambda p: zero_to_fp32.natural_keys(p.name))
    if not model_files or not optim_files:
        raise XftError(f"cannot read DeepSpeed checkpoint {tag_dir}: no *_model_states.pt "
                       "and *_optim_states.pt files")
    model_states = []
    for file in model_files:
        state = load_deepspeed_shard(file)
        model_states.append(zero_to_fp32.zero_model_state(
            buffers={k: v.float() if v.is_floating_point() else v
                     for k, v in state["module"].items() if k in state["buffer_names"]},
            param_shapes=state["param_shapes"],
            shared_params=[[k, v] for k, v in state["shared_params"].items()],
            ds_version=state.get("ds_version"),
            frozen_param_shapes=state.get("frozen_param_shapes"),
            frozen_param_fragments=state.get("frozen_param_fragments")))
    optim = [load_deepspeed_shard(file)["optimizer_state_dict"] for file in optim_files]
    stage = int(optim[0]["zero_stage"])
    world_size = optim[0]["partition_count"]
    world_size = max(world_size) if isinstance(world_size, list) else world_size
    if world_size != len(optim_files):
        raise XftError(f"cannot read DeepSpeed checkpoint {tag_dir}: {len(optim_files)} "
                       f"optimizer shards for a world size of {world_size}")
    if stage <= 2:
        groups = [o["single_partition_of_fp32_groups"] for o in optim]
        state = zero_to_fp32._get_fp32_state_dict_from_zero2_checkpoint(
            world_size, groups, model_states, False, optim[0].get("param_alignment_paddings"))
    else:
        groups = [o["fp32_flat_groups"] for o in optim]
        state = zero_to_fp32._get_fp32_state_dict_from_zero3_checkpoint(
            world_size, groups, model_states, False)
    return zero_to_fp32.to_torch_tensor(state)


def _strip_prefix(state, prefix):
    if state and all(key.startswith(prefix) for key in state):
        return {key[len(prefix):]: value for key, value in state.items()}
    return state
