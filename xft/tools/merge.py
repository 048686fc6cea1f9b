"""`xft convert merge BASE ADAPTER OUT`: fold a PEFT adapter into its base model.

The base is loaded unquantized, in its own dtype (the one its config.json
records) unless `dtype` says otherwise, so a bf16 base gives a bf16 merged
model, and an adapter trained with QLoRA is merged into the full-precision
weights (the quantized ones it trained against are their rounded copies).
Before peft loads the adapter, its tensors are checked against the base: every
module it adapts must exist with matching sizes (a clear error names the first
that does not), and an adapter whose embeddings / output head were trained at a
larger vocabulary (`modules_to_save` after a vocabulary extension) gets the base
resized to that vocabulary first.

The output is a full model directory (safetensors, sharded by
`max_shard_size`, default DEFAULT_SHARD_SIZE) with the adapter folder's
tokenizer (it carries the chat template of training; the base's when the
adapter folder has none), a
generation_config.json whose eos list adds the adapter's end-of-turn tokens to
the base's (from the adapter's generation_config.json, or from the template
named in its xft_meta.json), xft's meta/config files and, for an adapter xft
exported, its model card (README.md) saying what was merged into what.
"""

import json
import shutil
import warnings
from pathlib import Path

from xft.errors import ConfigError, XftError
from xft.outputs import check_output, write_output
from xft.paths import MODEL_FILES, check_local, portable_name, resolve_path

DTYPE_NAMES = {"auto": "auto", "fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
PEFT_PREFIX = "base_model.model."
# Adapter tensor names end in one of these after the adapted module's path.
LORA_PARTS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B",
              "lora_magnitude_vector")


def merge_adapter(base, adapter, out_dir, dtype="auto", max_shard_size=None, log=print,
                  overwrite=False):
    from xft.engine.export import (CONFIG_COPY, DEFAULT_SHARD_SIZE, META_FILE, read_meta,
                                   write_generation_files)
    from xft.engine.model_card import write_card
    from xft.model.build import load_causal_lm

    if dtype not in DTYPE_NAMES:
        raise XftError(f"--dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    check_local(base, "base model directory", "BASE", need=MODEL_FILES)
    base, adapter = resolve_path(base), Path(resolve_path(adapter))
    if not (adapter / "adapter_config.json").is_file():
        raise XftError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    out_dir = check_output(out_dir, [base, adapter], overwrite)  # before the slow part
    model = load_adapter(load_causal_lm(base, DTYPE_NAMES[dtype]), adapter, base, log)
    merged = model.merge_and_unload()
    tokenizer = _tokenizer_for(adapter, base)
    if tokenizer is None:
        log(f"note: neither {adapter} nor {base} has a tokenizer; the merged folder has none")

    written = str(merged.dtype).removeprefix("torch.")

    def write(tmp):
        merged.save_pretrained(str(tmp), safe_serialization=True,
                               max_shard_size=max_shard_size or DEFAULT_SHARD_SIZE)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        write_generation_files(tmp, merged, adapter_stop_ids(adapter, tokenizer))
        meta = {**read_meta(adapter), "adapter": False, "merged_from": str(adapter)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if "card" in meta:  # an adapter xft exported: its model card, for the merged model
            write_card(tmp, meta["card"], out_dir.name, adapter=False,
                       merged_into=f"{portable_name(str(base))}, {written}")
        if (adapter / CONFIG_COPY).is_file():
            shutil.copy2(adapter / CONFIG_COPY, tmp / CONFIG_COPY)

    out = write_output(out_dir, write)
    log(f"xft: merged {adapter} into {base}; {written} model written to {out}")
    return out


def adapter_stop_ids(adapter, tokenizer):
    """End-of-turn ids the adapter was trained to stop at: its generation_config.json's
    eos list (xft writes one), else those of the template its xft_meta.json names."""
    from transformers import GenerationConfig

    from xft.data.templates import TEMPLATES, get_template
    from xft.data.templates.stops import turn_end_ids
    from xft.engine.export import read_meta

    if (adapter / "generation_config.json").is_file():
        eos = GenerationConfig.from_pretrained(str(adapter)).eos_token_id
        return list(eos) if isinstance(eos, (list, tuple)) else [] if eos is None else [eos]
    name = read_meta(adapter).get("template")
    if tokenizer is None or name not in TEMPLATES:
        return []
    try:
        return turn_end_ids(get_template(name, tokenizer), tokenizer)
    except ConfigError:  # the tokenizer does not fit the template: the base's eos stays
        return []


def load_adapter(model, adapter, base, log=print):
    """PeftModel of `model` (loaded from `base`) with the adapter folder's weights.

    The adapter's tensors are checked against the model first, and the model's
    embeddings resized to the adapter's vocabulary when it saved them whole.
    """
    from xft.model.quant import import_bitsandbytes

    import_bitsandbytes()  # before peft imports it, to keep its import quiet
    from peft import PeftModel
    from peft.utils import load_peft_weights

    weights = load_peft_weights(str(adapter), device="cpu")
    vocab = adapter_vocab_size(model, weights)
    if vocab is not None and vocab != model.get_input_embeddings().weight.shape[0]:
        log(f"resizing the base's embeddings to the adapter's vocabulary of {vocab}")
        model.resize_token_embeddings(vocab, mean_resizing=False)  # rows come from the adapter
    check_adapter_fits(model, weights, adapter, base)
    try:
        with warnings.catch_warnings():
            # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing`;
            # the FutureWarning is theirs to fix and would only clutter chat output.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                    category=FutureWarning)
            return PeftModel.from_pretrained(model, str(adapter))
    except (ValueError, RuntimeError, KeyError) as e:
        raise XftError(f"adapter {adapter} does not fit base {base}: {e}") from None


def adapter_vocab_size(model, weights):
    """Rows of the input embeddings the adapter saved in full (modules_to_save), or None."""
    name = _param_name(model, model.get_input_embeddings().weight)
    rows = {tensor.shape[0] for key, tensor in weights.items()
            if _split_lora_key(key.removeprefix(PEFT_PREFIX)) == (name, None)}
    if len(rows) > 1:
        raise XftError(f"the adapter saves the embeddings '{name}' with {sorted(rows)} rows")
    return rows.pop() if rows else None


def check_adapter_fits(model, weights, adapter, base):
    """Every adapted module exists in the base and its sizes agree; XftError otherwise."""
    params = model.state_dict()  # with tied weights under both names (lm_head too)
    modules = dict(model.named_modules())
    for key, tensor in weights.items():
        module_path, part = _split_lora_key(key.removeprefix(PEFT_PREFIX))
        where = f"adapter {adapter} does not fit base {base}"
        if part is None:  # a module saved whole (modules_to_save)
            name = module_path
            if name not in params:
                raise XftError(f"{where}: the base has no weight '{name}' (another architecture?)")
            if tuple(params[name].shape) != tuple(tensor.shape):
                raise XftError(f"{where}: '{name}' is {tuple(tensor.shape)} in the adapter, "
                               f"{tuple(params[name].shape)} in the base")
            continue
        module = modules.get(module_path)
        if module is None:
            raise XftError(f"{where}: the base has no module '{module_path}' "
                           "(another architecture?)")
        # in/out_features, not the weight's shape: a 4-bit layer stores its weight packed.
        inputs, outputs = (getattr(module, "in_features", None),
                           getattr(module, "out_features", None))
        if part == "lora_A" and inputs is not None and inputs != tensor.shape[1]:
            raise XftError(f"{where}: '{module_path}' takes {inputs} inputs in the base, "
                           f"{tensor.shape[1]} in the adapter (another model size?)")
        if part == "lora_B" and outputs is not None and outputs != tensor.shape[0]:
            raise XftError(f"{where}: '{module_path}' gives {outputs} outputs in the base, "
                           f"{tensor.shape[0]} in the adapter (another model size?)")


def _split_lora_key(name):
    """('model.layers.0.self_attn.q_proj', 'lora_A') for a LoRA tensor, (base weight name,
    None) for a module saved whole: peft may save it as `X.weight` or, after a vocabulary
    resize, also as `X.modules_to_save.weight` / `X.original_module.weight`."""
    parts = [p for p in name.split(".") if p not in ("modules_to_save", "original_module")]
    for i, part in enumerate(parts):
        if part in LORA_PARTS:
            return ".".join(parts[:i]), part
    return ".".join(parts), None


def _param_name(model, tensor):
    return next(name for name, p in model.named_parameters() if p is tensor)


def _tokenizer_for(adapter, base):
    from transformers import AutoTokenizer

    source = adapter if (adapter / "tokenizer_config.json").is_file() else base
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError):
        return None
