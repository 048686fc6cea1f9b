"""Write the Hugging Face artifact of a run: a PEFT adapter or a full model directory.

The directory loads with stock transformers/peft (no xft needed): weights as
safetensors, the tokenizer with the training chat template written in, a
`generation_config.json` whose `eos_token_id` lists the base EOS and the
template's end-of-turn tokens (so stock `generate()` stops where training taught
the model to), plus `xft_meta.json` (template name) and the xft config that
produced it.
"""

import contextlib
import json
from pathlib import Path

from xft.data.templates.stops import turn_end_ids
from xft.engine.distributed import barrier, is_main_process
from xft.model.methods import is_sequence_classifier
from xft.outputs import write_output

HF_DIR_NAME = "hf"  # the artifact's folder inside the work dir
META_FILE = "xft_meta.json"
CONFIG_COPY = "xft_config.py"


def export_hf(model, tokenizer, template, out_dir, config_text=None, max_shard_size=None):
    """Save atomically: a crash mid-write never replaces a previous good export, and
    leaves only a staging folder no xft command loads (xft.outputs).

    `max_shard_size` (e.g. '2GB') splits a full model's safetensors into shards with
    an index; PEFT saves an adapter as one file whatever the size.
    """
    if is_peft_model(model) and is_sequence_classifier(model.get_base_model()):
        # A reward model is exported whole: stock AutoModelForSequenceClassification cannot
        # load a PEFT adapter of one (it does not know the one-label score head). The merge
        # runs on a copy, so training (or a best-weights export mid-run) goes on unchanged.
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    shard = {} if max_shard_size is None or is_peft_model(model) else {
        "max_shard_size": max_shard_size}
    if is_peft_model(model):  # the trained adapter only, not a frozen reference beside it
        shard["selected_adapters"] = [model.active_adapter]

    def write(tmp):
        model.save_pretrained(str(tmp), safe_serialization=True, **shard)
        tokenizer.chat_template = template.to_jinja()
        tokenizer.save_pretrained(str(tmp))
        write_generation_files(tmp, model, turn_end_ids(template, tokenizer))
        meta = {"template": template.name, "adapter": is_peft_model(model)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if config_text is not None:
            (tmp / CONFIG_COPY).write_text(config_text, encoding="utf-8")

    return write_output(out_dir, write)


def write_generation_files(out_dir, model, stop_ids):
    """Rewrite the saved generation_config.json (written for adapters too, where peft
    writes none) with `stop_ids` added to its eos list, and config.json with use_cache
    back on (training turns it off for gradient checkpointing; inference wants it).
    A model that does not generate (a reward model's sequence classifier) gets no
    generation_config.json."""
    import copy

    out_dir = Path(out_dir)
    eos = []
    if getattr(model, "generation_config", None) is not None:
        generation = copy.deepcopy(model.generation_config)
        eos = generation.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else [] if eos is None else [eos]
        if not eos and getattr(model.config, "eos_token_id", None) is not None:
            eos = [model.config.eos_token_id]
        eos = list(dict.fromkeys(eos + list(stop_ids)))
        generation.eos_token_id = eos[0] if len(eos) == 1 else eos
        generation.save_pretrained(str(out_dir))
    config_file = out_dir / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if config.get("use_cache") is False:
            config["use_cache"] = True
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n",
                                   encoding="utf-8")
    return eos


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
