"""The reference policy of DPO-family and KTO objectives, scored without a second copy
where the method allows it.

  disabled_adapter  LoRA / QLoRA trained from a fresh adapter: the same model with its
                    adapters switched off (peft's `disable_adapter`) is the base model.
  adapter           LoRA continued from an existing (e.g. SFT) adapter: a frozen copy of
                    that adapter, loaded beside the trained one under REFERENCE_ADAPTER,
                    is switched on instead; the base alone would be the wrong reference
                    (LLaMA-Factory#8974: loss 0 and accuracy 1 within steps).
  copy              full fine-tuning: a frozen copy of the starting model (`module`).
  model             the model's own weights: right for scoring only before training
                    starts (the precomputing pass of full fine-tuning, no copy needed).
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
KINDS = ("disabled_adapter", "adapter", "copy", "model", "precomputed")


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
    elif reference.kind == "model":
        yield model
    else:
        yield reference.module


def reference_scores(model, batch, reference, score):
    """`score(model, batch)` under the reference's weights, without gradients.

    For kind 'precomputed', the batch's `ref_logps` instead.
    """
    if reference.kind == "precomputed":
        if "ref_logps" not in batch:
            raise RuntimeError("a precomputed reference, but the batch carries no ref_logps: "
                               "the precomputing pass did not run on these samples")
        return batch["ref_logps"]
    with torch.no_grad(), reference_weights(model, reference) as scorer:
        return score(scorer, batch)


def add_reference_adapter(peft_model, adapter_dir):
    """Load the adapter at `adapter_dir` beside the trained one, frozen, as the reference."""
    peft_model.load_adapter(adapter_dir, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
    return Reference("adapter")


def starting_reference(model, method_cfg, copy=True):
    """The reference policy of a run starting from `model`: a frozen copy for full
    fine-tuning (or freeze; with `copy=False`, the model itself, for a pass that scores
    before training), the starting adapter when LoRA continues from one
    (`method.init_adapter`), else the disabled adapter (the base model)."""
    from xft.paths import resolve_path

    if peft_model_of(model) is None:
        return frozen_copy(model) if copy else Reference("model")
    if method_cfg is not None and method_cfg.init_adapter is not None:
        return add_reference_adapter(model, resolve_path(method_cfg.init_adapter))
    return Reference("disabled_adapter")


def frozen_copy(model):
    """A frozen copy of `model` (its starting weights) for kind 'copy'."""
    import copy

    module = copy.deepcopy(model).eval()
    module.requires_grad_(False)
    return Reference("copy", module)


def drop_reference(model, reference):
    """Free what `reference` holds beside the model (the reference adapter, the copy)."""
    if reference.kind == "adapter":
        peft_model_of(model).delete_adapter(REFERENCE_ADAPTER)


def scoring_device(model):
    """Where a pass before training scores: this process's GPU when there is one (the
    engines move the model there anyway), else where the model is."""
    import os

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return next(model.parameters()).device


def precompute_scores(model, reference, samples, collate, score, batch_size):
    """`score(model, batch)` under `reference` for every sample, batched by `collate`, as
    one float list per batch row order (for pairs: the batch's chosen sides, then its
    rejected sides). Runs on `scoring_device` and leaves the model where it was."""
    home = next(model.parameters()).device
    device = scoring_device(model)
    quantized = getattr(model, "is_quantized", False) or getattr(
        getattr(model, "base_model", None), "is_quantized", False)
    if device != home and not quantized:
        model.to(device)
    was_training = model.training
    model.eval()  # no dropout: the reference scores as the live one does under no_grad
    try:
        scores = []
        for begin in range(0, len(samples), batch_size):
            batch = collate(samples[begin:begin + batch_size])
            batch = {k: v.to(device) for k, v in batch.items()}
            scores.append(reference_scores(model, batch, reference, score).float().cpu())
        return scores
    finally:
        model.train(was_training)
        if device != home and not quantized:
            model.to(home)
