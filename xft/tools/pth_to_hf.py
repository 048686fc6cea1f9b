"""`xft convert pth_to_hf CFG CKPT OUT`: a training checkpoint → a Hugging Face artifact.

The config rebuilds the model with the one build step training uses
(xft.build: same tokenizer, bound template, base, method, quantization, vocabulary
resize), the checkpoint's trained weights are loaded into it, and
xft.engine.export writes the artifact the run would have written at that step:
a PEFT adapter (LoRA/QLoRA) or a full model, with the tokenizer carrying the
chat template, xft_meta.json, the config copied beside it and a model card whose
metrics are the checkpoint's work dir's up to its step.

Only the trainable weights are taken from the checkpoint; the frozen ones are
the base model's (for QLoRA they are the quantized base, which an adapter does
not store anyway). A trainable weight missing from the checkpoint, or with
another shape, means config and checkpoint do not belong together: an error.
"""

from pathlib import Path

from xft.errors import XftError
from xft.engine.checkpoints import read_checkpoint
from xft.outputs import check_output


def pth_to_hf(config, checkpoint, out_dir, max_shard_size=None, cfg_options=None, log=print,
              overwrite=False):
    from xft.build import build
    from xft.config.loader import config_text, load_config
    from xft.engine.export import export_hf
    from xft.engine.model_card import RunCard

    cfg, experiment = load_config(config, cfg_options, data_paths=False)
    # OUT may be neither the checkpoint nor in its work dir (other checkpoints, hf/).
    out_dir = check_output(out_dir, [checkpoint, Path(checkpoint).parent], overwrite)
    ckpt = read_checkpoint(checkpoint)  # before the model: a bad path fails fast
    log(f"reading {ckpt.source} checkpoint {ckpt.path}")
    built = build(experiment, parts=("model",), log=log)
    model, tokenizer, template = built.model, built.tokenizer, built.template
    loaded = load_trained_weights(model, ckpt, experiment.method.r)
    log(f"loaded {loaded} trained tensors ({experiment.method.type})")
    # The model card's metrics: those of the checkpoint's work dir up to its step.
    card = RunCard(experiment, Path(checkpoint).parent)
    out = export_hf(model.eval(), tokenizer, template, out_dir, config_text(cfg), max_shard_size,
                    card, checkpoint_step(checkpoint))
    log(f"xft: wrote the {'adapter' if _is_peft(model) else 'model'} to {out}")
    return out


def load_trained_weights(model, ckpt, lora_r=None):
    """Copy the checkpoint's values of `model`'s trainable parameters; return how many."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    if not trainable:
        raise XftError("the config's model has no trainable weights; nothing to convert")
    if ckpt.kind == "peft":
        if not _is_peft(model):
            raise XftError(f"{ckpt.path} holds a PEFT adapter but the config trains without "
                           "LoRA (method.type is not 'lora')")
        from peft import set_peft_model_state_dict

        from xft.engine.resume_check import check_weight_shapes

        check_weight_shapes(str(ckpt.path), {k: v.shape for k, v in ckpt.state.items()}, model,
                            lora_r)
        try:
            result = set_peft_model_state_dict(model, ckpt.state)
        except RuntimeError as e:  # size mismatch
            raise XftError(f"{ckpt.path} does not fit the config's model: {e}") from None
        missing = sorted(trainable & set(result.missing_keys))
        if missing or result.unexpected_keys:
            raise XftError(f"{ckpt.path} does not fit the config's model: "
                           f"missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
        return len(trainable)
    state = {}
    for name in sorted(trainable):
        if name not in ckpt.state:
            raise XftError(f"{ckpt.path} has no weight '{name}', which the config trains: "
                           "was it written by another config (method, model, lora options)?")
        state[name] = ckpt.state[name]
    own = model.state_dict()
    for name, value in state.items():
        if value.shape != own[name].shape:
            raise XftError(f"{ckpt.path}: weight '{name}' has shape {tuple(value.shape)}, the "
                           f"config's model {tuple(own[name].shape)}")
    model.load_state_dict(state, strict=False)
    return len(state)


def checkpoint_step(checkpoint):
    """The step in an engine's checkpoint name (iter_N.pth, checkpoint-N), else None."""
    from xft.engine.engines import ENGINES

    for engine in ENGINES.values():
        match = engine.checkpoint_pattern.match(Path(checkpoint).name)
        if match:
            return int(match.group(1))
    return None


def _is_peft(model):
    from xft.engine.export import is_peft_model

    return is_peft_model(model)
