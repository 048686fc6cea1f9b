"""Check a checkpoint against the built run before either engine resumes from it.

The engines' own failures on a checkpoint that does not fit are far from the cause
(MMEngine: "'NoneType' object has no attribute 'sampler'" past the last step, a
page of "size mismatch" lines for another LoRA rank). Here the checkpoint's step
and tensor shapes are read without loading its tensors (torch's mmap, safetensors
headers) and compared with the run: the message names the file, the key and why.
"""

import json
from pathlib import Path

from xft.engine.checkpoints import ADAPTER_WEIGHTS, MODEL_WEIGHTS
from xft.errors import XftError, doing

TRAINER_STATE = "trainer_state.json"

def _key(name):
    """A weight's name without peft's adapter name, which saved adapters leave out."""
    return name.replace(".default.", ".")


def check_resume(checkpoint, built, log=print):
    """XftError unless `checkpoint` (an iter_N.pth or a checkpoint-N folder) fits `built`."""
    path = Path(checkpoint)
    with doing(f"reading checkpoint {path} to resume from it"):
        step, shapes = _read_mmengine(path) if path.is_file() else _read_trainer(path)
    total = built.plan.total_steps
    if step is not None and step >= total:
        raise XftError(f"--resume: checkpoint {path} is at step {step}, but this run has "
                       f"{total} optimizer steps (train.epochs / train.max_steps, batch size "
                       f"and data): nothing is left to train; raise train.max_steps or "
                       f"train.epochs to continue")
    if path.is_file():  # MMEngine stores the model's own state_dict keys: all must exist
        _check_known(path, shapes, built)
    if shapes is not None:
        check_weight_shapes(f"--resume: checkpoint {path}", shapes, built.model,
                            built.experiment.method.r)
    log(f"resuming from {path}" + (f" (step {step} of {total})" if step is not None else ""))


def _read_mmengine(path):
    """(step, {model key: shape}) of an MMEngine iter_N.pth."""
    import torch

    try:  # plain weights_only=True: nothing allow-listed (xft.engine.safe_load)
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # not a zip, not a torch file, a truncated one...
        raise XftError(f"--resume: {path} is not a readable checkpoint "
                       f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise XftError(f"--resume: {path} is not an MMEngine checkpoint (no 'state_dict')")
    meta = checkpoint.get("meta") or {}
    shapes = {_key(key.removeprefix("lm.")): tuple(value.shape)
              for key, value in checkpoint["state_dict"].items() if hasattr(value, "shape")}
    return meta.get("iter"), shapes


def _read_trainer(path):
    """(step, {key: shape} or None) of a Trainer checkpoint-N folder. Its keys are as
    save_pretrained writes them, which for peft's modules_to_save differ from the live
    model's: only the shapes of keys both have are compared."""
    state_file = path / TRAINER_STATE
    if not state_file.is_file():
        raise XftError(f"--resume: {path} is not a Trainer checkpoint (no {TRAINER_STATE})")
    try:
        step = json.loads(state_file.read_text(encoding="utf-8"))["global_step"]
    except (ValueError, KeyError, TypeError) as e:
        raise XftError(f"--resume: {state_file} is not a Trainer state file "
                       f"({type(e).__name__}: {e})") from None
    for name in (ADAPTER_WEIGHTS, MODEL_WEIGHTS):
        if (path / name).is_file():
            from safetensors import safe_open

            with safe_open(str(path / name), framework="pt") as f:
                return step, {_key(key): tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    return step, None  # DeepSpeed-only or sharded: the engine checks them


def _check_known(path, shapes, built):
    model = {_key(key) for key in built.model.state_dict()}
    unknown = [key for key in shapes if key not in model]
    if unknown:
        raise XftError(f"--resume: checkpoint {path} holds {len(unknown)} weight(s) this run's "
                       f"model lacks, e.g. '{unknown[0]}': it was written with another model, "
                       f"method or target_modules (this run: method.type="
                       f"'{built.experiment.method.type}')")


def check_weight_shapes(source, shapes, model, lora_r=None):
    """XftError naming the first weight of `shapes` ({name: shape}, names as saved, with or
    without peft's adapter name) whose shape differs from `model`'s weight of that name."""
    own = {_key(key): tuple(value.shape) for key, value in model.state_dict().items()}
    for key, shape in shapes.items():
        key = _key(key)
        if key in own and own[key] != tuple(shape):
            hint = (f" (this run: method.r={lora_r}; was the checkpoint trained with "
                    f"another rank?)" if "lora_" in key else
                    " (another model or vocabulary size?)")
            raise XftError(f"{source}: '{key}' has shape {list(shape)}, this run's model has "
                           f"{list(own[key])}{hint}")
