"""`xft convert-config`: a LLaMA-Factory training YAML or an XTuner Python config → an
xft YAML config (XTuner's reading: xft.tools.convert_xtuner).

LLaMA-Factory's keys are its own and transformers' TrainingArguments; docs/migrating.md
maps each to xft's. This applies that table. A key the table does not know, or one
xft does not need, is not dropped silently: each is named in the output's head and
on the console. Where TrainingArguments' default differs from xft's (lr, warmup,
epochs, batch size, schedule, logging), the LLaMA-Factory run's value is written
out, so the converted run trains what the original would have.
"""

from pathlib import Path

from xft.errors import ConfigError

# LLaMA-Factory key → xft dotted key, copied as they are.
SAME = {
    "model_name_or_path": "model.path",
    "trust_remote_code": "model.trust_remote_code",
    "finetuning_type": "method.type",
    "lora_rank": "method.r",
    "lora_alpha": "method.alpha",
    "lora_dropout": "method.dropout",
    "use_dora": "method.use_dora",
    "use_rslora": "method.use_rslora",
    "loraplus_lr_ratio": "method.loraplus_lr_ratio",
    "cutoff_len": "data.max_length",
    "packing": "data.pack",
    "val_size": "data.test_size",
    "output_dir": "work_dir",
    "logging_steps": "train.log_interval",
    "save_steps": "train.save_interval",
    "save_total_limit": "train.save_total_limit",
    "per_device_train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "max_steps": "train.max_steps",
    "warmup_ratio": "train.warmup_ratio",
    "eval_steps": "train.eval_interval",
    "learning_rate": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "max_grad_norm": "optim.max_grad_norm",
    "seed": "seed",
}
# transformers.TrainingArguments' defaults where xft's differ: a LLaMA-Factory YAML
# that leaves them out trains with these.
TRAINER_DEFAULTS = {"learning_rate": 5e-5, "warmup_ratio": 0.0, "num_train_epochs": 3.0,
                    "per_device_train_batch_size": 8, "logging_steps": 500,
                    "lr_scheduler_type": "linear"}
# LLaMA-Factory's own LoRA defaults (finetuning_type defaults to lora there).
LORA_DEFAULTS = {"lora_rank": 8, "lora_dropout": 0.0, "lora_target": "all"}
# Keys with nothing to carry over in xft, and why.
IGNORED = {
    "do_train": "xft train trains", "overwrite_cache": "xft's cache is keyed on the inputs",
    "overwrite_output_dir": "xft never clobbers; a work dir is reused",
    "preprocessing_num_workers": "not an xft setting",
    "dataloader_num_workers": "use data.num_workers", "plot_loss": "loss_curve.png always",
    "ddp_timeout": "not an xft setting", "per_device_eval_batch_size": "not an xft setting",
    "eval_strategy": "train.eval_interval carries the steps",
    "resume_from_checkpoint": "use xft train --resume",
    "deepspeed": "pass it on the command line: xft train CONFIG --deepspeed FILE",
}
TEMPLATES = {"llama3": "llama3_chat", "llama2": "llama2_chat", "qwen": "qwen2_chat",
             "qwen3": "qwen3", "mistral": "mistral", "chatglm3": "chatglm3", "yi": "yi_chat",
             "gemma": "gemma", "gemma3": "gemma3", "phi": "phi3", "phi4": "phi4",
             "glm4": "glm4", "deepseek": "deepseek_chat",
             "deepseekr1": "deepseek_r1", "intern2": "internlm2_chat", "vicuna": "vicuna",
             "zephyr": "zephyr", "alpaca": "alpaca", "default": "default"}
SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant_with_warmup": "constant",
             "cosine_with_min_lr": "cosine_with_min_lr",
             "warmup_stable_decay": "warmup_stable_decay", "polynomial": "polynomial"}
ATTENTION = {"fa2": "flash_attention_2", "sdpa": "sdpa", "disabled": "eager"}


def put_dotted(tree, dotted, value):
    """tree['a']['b'] = value for dotted 'a.b', making the dicts on the way."""
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[last] = value


def convert_llama_factory(raw):
    """(xft config dict, notes): notes name each key not carried over, and why."""
    lora = raw.get("finetuning_type", "lora") == "lora"
    raw = {**TRAINER_DEFAULTS, **(LORA_DEFAULTS if lora else {}), **raw}
    if lora:
        raw.setdefault("finetuning_type", "lora")
        raw.setdefault("lora_alpha", raw["lora_rank"] * 2)  # LLaMA-Factory: twice the rank
    out, notes = {}, []

    def put(dotted, value):
        put_dotted(out, dotted, value)

    stage = raw.pop("stage", "sft")
    if stage not in ("sft", "pt"):
        raise ConfigError(f"stage: {stage!r}: convert-config converts the sft and pt stages; "
                          "for preference and RL stages write xft's objective by hand "
                          "(docs/preference.md, docs/rl.md)")
    for key, value in raw.items():
        if key in SAME:
            put(SAME[key], value)
        elif key == "num_train_epochs":
            if float(value) != int(value):
                notes.append(f"num_train_epochs: {value} rounded to {int(value)} "
                             "(xft trains whole epochs; train.max_steps for a part)")
            put("train.epochs", max(1, int(value)))
        elif key == "lora_target":
            targets = [t.strip() for t in str(value).split(",")]
            put("method.target_modules", "all-linear" if targets == ["all"] else targets)
        elif key == "template":
            put("template", TEMPLATES.get(value, "auto"))
            if value not in TEMPLATES:
                notes.append(f"template: {value!r} has no named xft template; 'auto' uses the "
                             "tokenizer's own (check it: xft template check MODEL)")
        elif key == "dataset":
            names = [n.strip() for n in str(value).split(",")]
            limit = raw.get("max_samples")
            put("datasets", [dict(name=n, **({"max_samples": limit} if limit else {}))
                             for n in names])
            put("data.registry", [str(Path(raw.get("dataset_dir", "data"))
                                      / "dataset_info.json")])
        elif key == "warmup_steps":
            if 0 < float(value) < 1:  # transformers reads a fraction as a ratio
                put("train.warmup_ratio", float(value))
            elif value:
                notes.append(f"warmup_steps: {value} not converted (xft takes "
                             "train.warmup_ratio: the steps over the run's total)")
        elif key in ("dataset_dir", "max_samples"):
            continue  # with `dataset`
        elif key == "quantization_bit":
            put("model.quantization", {"bits": int(value)})
        elif key == "lr_scheduler_type":
            if value == "constant":
                put("train.lr_scheduler", "constant")
                put("train.warmup_ratio", 0.0)
            elif value in SCHEDULES:
                put("train.lr_scheduler", SCHEDULES[value])
            else:
                notes.append(f"lr_scheduler_type: {value!r} is not an xft schedule; "
                             "xft's default (cosine) applies")
        elif key in ("bf16", "fp16"):
            if value:
                dtype = "bfloat16" if key == "bf16" else "float16"
                if raw.get("finetuning_type", "lora") == "full":
                    put("train.mixed_precision", key)  # fp32 master weights
                else:
                    put("model.dtype", dtype)  # a frozen base in half precision
        elif key == "flash_attn":
            if value in ATTENTION:
                put("model.attn_implementation", ATTENTION[value])
        elif key == "report_to":
            trackers = [value] if isinstance(value, str) else list(value)
            put("train.report_to", [t for t in trackers if t != "none"])
        elif key in IGNORED:
            notes.append(f"{key}: not converted ({IGNORED[key]})")
        else:
            notes.append(f"{key}: not converted (no xft counterpart known; "
                         "see docs/migrating.md)")
    if stage == "pt":
        notes.append("stage: pt → SFT on the datasets' documents (their registry entries "
                     "must use the pretrain format)")
    return out, notes


def read_llama_factory(src):
    import yaml

    try:
        raw = yaml.safe_load(src.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read {src}: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: a LLaMA-Factory config is a mapping of keys")
    return convert_llama_factory(raw)


def read_xtuner(src):
    from xft.tools.convert_xtuner import convert_xtuner

    try:
        text = src.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {src}: {e}") from None
    try:
        return convert_xtuner(text, str(src))
    except ConfigError as e:
        raise ConfigError(f"{src}: {e}") from None


READERS = {".yaml": read_llama_factory, ".yml": read_llama_factory, ".py": read_xtuner}


def convert_config(src, out_path):
    """Write the xft YAML for `src` (LLaMA-Factory YAML or XTuner .py) to `out_path`;
    return the notes."""
    import yaml

    from xft.config.schema import validate

    src, out_path = Path(src), Path(out_path)
    if src.suffix not in READERS:
        raise ConfigError(f"{src}: convert-config reads LLaMA-Factory YAML (.yaml, .yml) and "
                          "XTuner Python (.py) configs")
    if out_path.exists():
        raise ConfigError(f"{out_path} already exists; remove it or choose another name")
    config, notes = READERS[src.suffix](src)
    # xft's own checks before anything is written; datasets named in a registry are looked
    # up when the config runs (the registry may sit beside the converted file).
    checked = {**config, "datasets": [{"path": "datasets.json"}],
               "data": {k: v for k, v in config.get("data", {}).items() if k != "registry"}}
    try:
        validate(checked)
    except ConfigError as e:
        raise ConfigError(f"{src} converted to an invalid xft config: {e}") from None
    head = [f"# Converted by `xft convert-config` from {src}."]
    head += [f"#   {note}" for note in notes]
    out_path.write_text("\n".join(head) + "\n" + yaml.safe_dump(config, sort_keys=False,
                                                                 allow_unicode=True),
                        encoding="utf-8")
    return notes
