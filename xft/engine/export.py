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

from xft.console import library_progress_bars_off
from xft.data.templates.stops import turn_end_ids
from xft.engine.distributed import barrier, is_main_process
from xft.engine.model_card import write_card
from xft.model.methods import is_sequence_classifier
from xft.outputs import write_output
from xft.paths import portable_name

HF_DIR_NAME = "hf"  # the artifact's folder inside the work dir
META_FILE = "xft_meta.json"
CONFIG_COPY = "xft_config.py"
# Full models are written in safetensors files of at most this size (transformers' own
# default, 50GB, makes one file of most models; the Hub's convention is 5GB shards).
DEFAULT_SHARD_SIZE = "5GB"


def export_hf(model, tokenizer, template, out_dir, config_text=None, max_shard_size=None,
              card=None, card_step=None):
    """Save atomically: a crash mid-write never replaces a previous good export, and
    leaves only a staging folder no xft command loads (xft.outputs).

    `card` (xft.engine.model_card.RunCard) writes README.md, the model card, with the
    run's metrics up to `card_step` (all when None), and keeps its facts in
    xft_meta.json. An adapter names a base shipped with xft as `xft://NAME`
    (portable_name), not by the folder of this installation.

    `max_shard_size` (e.g. '2GB', default DEFAULT_SHARD_SIZE) splits a full model's
    safetensors into shards with an index; PEFT saves an adapter as one file whatever
    the size.
    """
    if is_peft_model(model) and is_sequence_classifier(model.get_base_model()):
        # A reward model is exported whole: stock AutoModelForSequenceClassification cannot
        # load a PEFT adapter of one (it does not know the one-label score head). The merge
        # runs on a copy, so training (or a best-weights export mid-run) goes on unchanged.
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    adapter = is_peft_model(model)
    save_options = {"save_embedding_layers": save_embedding_layers(model),
                    # the trained adapter only, not a frozen reference beside it
                    "selected_adapters": [model.active_adapter]} if adapter else {
        "max_shard_size": max_shard_size or DEFAULT_SHARD_SIZE}
    facts = card.facts(card_step) if card is not None else None

    def write(tmp):
        with library_progress_bars_off():  # "Writing model shards": one bar per shard
            model.save_pretrained(str(tmp), safe_serialization=True, **save_options)
        if adapter:
            portable_base(tmp)
        tokenizer.chat_template = template.to_jinja()
        tokenizer.save_pretrained(str(tmp))
        write_generation_files(tmp, model, turn_end_ids(template, tokenizer))
        meta = {"template": template.name, "adapter": adapter}
        if facts is not None:
            meta["card"] = facts
            write_card(tmp, facts, Path(out_dir).name, adapter)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if config_text is not None:
            (tmp / CONFIG_COPY).write_text(config_text, encoding="utf-8")

    return write_output(out_dir, write)


def save_embedding_layers(model):
    """peft's `save_embedding_layers` for this adapter.

    After a vocabulary resize peft's default ('auto') saves each resized embedding
    layer three times: its trained modules_to_save copy, the frozen original and the
    base layer. When every embedding layer trains as a modules_to_save copy, that
    copy is all a loader needs (it replaces the base's rows), so the others are left
    out: the adapter holds each matrix once. An embedding adapted by LoRA instead keeps
    peft's default, which saves its resized base rows once."""
    from peft.utils.other import ModulesToSaveWrapper

    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    if all(isinstance(layer, ModulesToSaveWrapper) for layer in layers if layer is not None):
        return False
    return "auto"


def portable_base(adapter_dir):
    """Rewrite adapter_config.json's base_model_name_or_path as xft.paths.portable_name."""
    path = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    name = portable_name(config.get("base_model_name_or_path"))
    if name != config.get("base_model_name_or_path"):
        config["base_model_name_or_path"] = name
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


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


def export_hf_from_ranks(model, tokenizer, template, out_dir, config_text=None, card=None,
                         card_step=None):
    """export_hf for a run of any number of processes: call it on every rank.

    Rank 0 writes. Under DeepSpeed ZeRO-3 each rank holds a slice of every weight,
    so the weights the artifact needs are gathered first (all ranks take part):
    the trainable ones of a PEFT model (the adapter), every one of a full model.
    """
    with _gathered_weights(model):
        if is_main_process():
            export_hf(model, tokenizer, template, out_dir, config_text, card=card,
                      card_step=card_step)
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
