"""Write the Hugging Face artifact of a run: a PEFT adapter or a full model directory.

The directory loads with stock transformers/peft (no xft needed): weights as
safetensors, the tokenizer with the training chat template written in, plus
`xft_meta.json` (template name) and the xft config that produced it.
"""

import contextlib
import json
import shutil
from pathlib import Path

from xft.engine.distributed import barrier, is_main_process
from xft.model.methods import is_sequence_classifier

HF_DIR_NAME = "hf"  # the artifact's folder inside the work dir
META_FILE = "xft_meta.json"
CONFIG_COPY = "xft_config.py"


def export_hf(model, tokenizer, template, out_dir, config_text=None, max_shard_size=None):
    """Save atomically: a crash mid-write never replaces a previous good export.

    `max_shard_size` (e.g. '2GB') splits a full model's safetensors into shards with
    an index; PEFT saves an adapter as one file whatever the size.
    """
    out_dir = Path(out_dir)
    if is_peft_model(model) and is_sequence_classifier(model.get_base_model()):
        # A reward model is exported whole: stock AutoModelForSequenceClassification cannot
        # load a PEFT adapter of one (it does not know the one-label score head). The merge
        # runs on a copy, so training (or a best-weights export mid-run) goes on unchanged.
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    tmp = fresh_tmp_dir(out_dir)
    shard = {} if max_shard_size is None or is_peft_model(model) else {
        "max_shard_size": max_shard_size}
    if is_peft_model(model):  # the trained adapter only, not a frozen reference beside it
        shard["selected_adapters"] = [model.active_adapter]
    model.save_pretrained(str(tmp), safe_serialization=True, **shard)
    tokenizer.chat_template = template.to_jinja()
    tokenizer.save_pretrained(str(tmp))
    meta = {"template": template.name, "adapter": is_peft_model(model)}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if config_text is not None:
        (tmp / CONFIG_COPY).write_text(config_text, encoding="utf-8")
    return replace_dir(tmp, out_dir)


def fresh_tmp_dir(out_dir):
    """An empty `OUT.tmp` beside `out_dir` to write into before `replace_dir`."""
    tmp = Path(out_dir).with_name(Path(out_dir).name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp, out_dir):
    """Swap the finished `tmp` in as `out_dir`, removing a previous `out_dir` only after."""
    tmp, out_dir = Path(tmp), Path(out_dir)
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old)
    else:
        tmp.rename(out_dir)
    return out_dir


def export_hf_from_ranks(model, tokenizer, template, out_dir, config_text=None):
    """export_hf for a run of any number of processes: call it on every rank.

    Rank 0 writes. Under DeepSpeed ZeRO-3 each rank holds a slice of every weight,
    so the weights the artifact needs are gathered first (all ranks take part):
    the trainable ones of a PEFT model (the adapter), every one of a full model.
    """
    with _gathered_weights(model):
        if is_main_process():
            export_hf(model, tokenizer, template, out_dir, config_text)
    barrier()
    return Path(out_dir)


def _gathered_weights(model):
    params = [p for p in model.parameters() if hasattr(p, "ds_id")]  # ZeRO-3 partitioned
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    if is_peft_model(model):
        params = [p for p in params if p.requires_grad]
    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def read_meta(model_dir):
    path = Path(model_dir) / META_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def is_peft_model(model):
    from peft import PeftModel

    return isinstance(model, PeftModel)
