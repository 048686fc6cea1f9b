"""The reference policy of DPO-family and KTO objectives, scored without a second copy
where the method allows it.

  disabled_adapter  LoRA / QLoRA trained from a fresh adapter: the same model with its
                    adapters switched off (peft's `disable_adapter`) is the base model.
  adapter           LoRA continued from an existing (e.g. SFT) adapter: a frozen copy of
                    that adapter, loaded beside the trained one under REFERENCE_ADAPTER,
                    is switched on instead; the base alone would be the wrong reference
                    (LLaMA-Factory#8974: loss 0 and accuracy 1 within steps).
  copy              full fine-tuning: a frozen copy of the starting model (`module`).
  precomputed       log-probs computed once before training and carried by the batch
                    (`ref_logps`, see xft.data.collate_pairs); no reference forward.

Reference scores never need gradients; they run under torch.no_grad and through the
engine's wrapped model (DDP, DeepSpeed), so ZeRO-3 gathers parameters as usual.
"""

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

REFERENCE_ADAPTER = "reference"
KINDS = ("disabled_adapter", "adapter", "copy", "precomputed")


@dataclass
class Reference:
    kind: str
    module: Optional[torch.nn.Module] = None  # the frozen copy, for kind 'copy'

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown reference kind {self.kind!r} (known: {KINDS})")
        if (self.kind == "copy") != (self.module is not None):
            raise ValueError("a 'copy' reference needs its module, and only it has one")


def peft_model_of(model):
    """The peft.PeftModel inside engine wrappers (DDP, DeepSpeed: `.module`), or None."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model if hasattr(model, "disable_adapter") else None


@contextlib.contextmanager
def reference_weights(model, reference):
    """Within this context, calling `model` scores with the reference's weights."""
    if reference.kind == "disabled_adapter":
        with peft_model_of(model).disable_adapter():
            yield model
    elif reference.kind == "adapter":
        peft = peft_model_of(model)
        trained = peft.active_adapter
        # inference_mode freezes every adapter; switching back re-enables the trained one
        # (and only it), as it was.
        peft.set_adapter(REFERENCE_ADAPTER, inference_mode=True)
        try:
            yield model
        finally:
            peft.set_adapter(trained)
    else:
        yield reference.module


def reference_scores(model, batch, reference, score):
    """`score(model, batch)` under the reference's weights, without gradients.

    For kind 'precomputed', the batch's `ref_logps` instead.
    """
    if reference.kind == "precomputed":
        return batch["ref_logps"]
    with torch.no_grad(), reference_weights(model, reference) as scorer:
        return score(scorer, batch)


def add_reference_adapter(peft_model, adapter_dir):
    """Load the adapter at `adapter_dir` beside the trained one, frozen, as the reference."""
    peft_model.load_adapter(adapter_dir, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
    return Reference("adapter")


def starting_reference(model, method_cfg):
    """The reference policy of a run starting from `model`: a frozen copy for full
    fine-tuning (or freeze), the starting adapter when LoRA continues from one
    (`method.init_adapter`), else the disabled adapter (the base model)."""
    from xft.paths import resolve_path

    if peft_model_of(model) is None:
        return frozen_copy(model)
    if method_cfg is not None and method_cfg.init_adapter is not None:
        return add_reference_adapter(model, resolve_path(method_cfg.init_adapter))
    return Reference("disabled_adapter")


def frozen_copy(model):
    """A frozen copy of `model` (its starting weights) for kind 'copy'."""
    import copy

    module = copy.deepcopy(model).eval()
    module.requires_grad_(False)
    return Reference("copy", module)
