"""The model card (README.md) of an exported artifact: base, data, method, template, metrics.

peft writes a generic card full of "[More Information Needed]"; xft knows what the run
was, so it writes its own. The facts are collected once (`RunCard.facts`, from the
Experiment and the run's metrics.jsonl at the moment of export), stored in xft_meta.json
under "card" and rendered by `render_card`; `xft convert merge` renders the adapter's
facts again for the merged model.
"""

from pathlib import Path

from xft.engine.monitor import read_metrics
from xft.paths import ASSET_SCHEME

CARD_FILE = "README.md"
# Float keys of metrics.jsonl records that are bookkeeping rather than results.
_NOT_RESULTS = {"lr", "grad_norm", "tokens_per_s", "elapsed"}


class RunCard:
    """What a training run's exports say about themselves."""

    def __init__(self, experiment, work_dir=None):
        self.experiment, self.work_dir = experiment, work_dir

    def facts(self, up_to_step=None):
        """JSON-able facts; metrics from records at or before `up_to_step` (all if None)."""
        exp = self.experiment
        records = read_metrics(self.work_dir) if self.work_dir is not None else []
        records = [r for r in records if up_to_step is None or r.get("step", 0) <= up_to_step]
        return {
            "base": exp.model.path,
            "tokenizer": exp.tokenizer.path,
            "method": describe_method(exp.method, exp.model),
            "objective": exp.objective.type,
            "data": [describe_dataset(d) for d in exp.datasets],
            "template": exp.template,
            "system": exp.system,
            "engine": exp.train.engine,
            "optimizer": f"{exp.optim.type}, lr {exp.optim.lr:g}",
            "metrics": final_metrics(records),
        }


def describe_method(method, model):
    if method.type == "full":
        text = "full fine-tuning"
    elif method.type == "freeze":
        text = f"top {method.trainable_layers} decoder layers trained" + \
            (", and the output head" if method.train_head else "")
    else:
        quant = model.quantization
        name = "LoRA"
        if quant is not None:
            kind = f"{quant.bits}-bit" + (f" {quant.quant_type}" if quant.bits == 4 else "")
            name = f"QLoRA ({kind} base)"
        variants = [v for v, on in (("DoRA", method.use_dora), ("rsLoRA", method.use_rslora))
                    if on]
        targets = method.target_modules if isinstance(method.target_modules, str) \
            else ", ".join(method.target_modules)
        text = f"{name} r={method.r} alpha={method.alpha} on {targets}"
        text += "".join(f", {v}" for v in variants)
    if method.modules_to_save:
        text += f"; trained whole: {', '.join(method.modules_to_save)}"
    if model.resize_vocab is not None:
        text += f"; vocabulary extended ({model.resize_vocab.init} init)"
    return text


def describe_dataset(dataset):
    fmt = dataset.format if isinstance(dataset.format, str) \
        else f"custom function {getattr(dataset.format, '__name__', '?')}"
    text = f"{dataset.path} ({fmt}"
    if dataset.max_samples is not None:
        text += f", first {dataset.max_samples} records"
    if dataset.ratio is not None:
        text += f", {dataset.ratio:.0%} of the mixture"
    return text + ")"


def final_metrics(records):
    """{'step': last step, 'train': the last training record's results, 'eval': the last
    validation record's}; empty parts left out."""
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "loss" not in r and len(r) > 1]
    out = {}
    for name, chosen in (("train", train), ("eval", evals)):
        if chosen:
            last = chosen[-1]
            out[name] = {"step": last["step"], **{k: v for k, v in last.items()
                                                  if isinstance(v, float)
                                                  and k not in _NOT_RESULTS}}
    return out


def render_card(facts, name, adapter, merged_into=None):
    """The README.md text for an artifact folder called `name`."""
    base = facts["base"]
    meta = ["---", f"library_name: {'peft' if adapter else 'transformers'}",
            "tags: [xft" + (", lora" if adapter else "") + "]"]
    if _is_hub_id(base):  # the Hub's card metadata names a base by its hub id only
        meta.append(f"base_model: {base}")
    lines = meta + ["---", "", f"# {name}", ""]
    kind = "A PEFT adapter" if adapter else "A full model"
    lines += [f"{kind} fine-tuned with xft from `{base}`.", ""]
    if merged_into is not None:
        lines += [f"The adapter was merged into the base weights ({merged_into}).", ""]
    rows = [("base model", f"`{base}`")]
    if facts.get("tokenizer"):
        rows.append(("tokenizer", f"`{facts['tokenizer']}`"))
    rows += [("method", facts["method"]), ("objective", facts["objective"]),
             ("data", "<br>".join(f"`{d}`" for d in facts["data"])),
             ("chat template", f"`{facts['template']}` (written into the tokenizer's "
                               "chat_template)"),
             ("engine, optimizer", f"{facts['engine']}, {facts['optimizer']}")]
    if facts.get("system"):
        rows.append(("system prompt", facts["system"]))
    metrics = facts.get("metrics") or {}
    for part, label in (("train", "final training metrics"), ("eval", "final validation")):
        if part in metrics:
            values = {k: v for k, v in metrics[part].items() if k != "step"}
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in values.items())
            rows.append((label, f"step {metrics[part]['step']}: {shown}"))
    if not metrics:
        rows.append(("metrics", "none recorded"))
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]
    lines += ["## Use", "", "```python"]
    if adapter:
        asset = base.startswith(ASSET_SCHEME)  # shipped inside xft: its folder comes from xft
        lines += ["from peft import PeftModel",
                  "from transformers import AutoModelForCausalLM, AutoTokenizer",
                  *(["from xft.paths import resolve_path"] if asset else []), "",
                  f"tokenizer = AutoTokenizer.from_pretrained({name!r})",
                  f"base = AutoModelForCausalLM.from_pretrained("
                  f"{f'resolve_path({base!r})' if asset else repr(base)})",
                  "if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:",
                  "    base.resize_token_embeddings(len(tokenizer))  # extended vocabulary",
                  f"model = PeftModel.from_pretrained(base, {name!r})"]
    else:
        lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f"tokenizer = AutoTokenizer.from_pretrained({name!r})",
                  f"model = AutoModelForCausalLM.from_pretrained({name!r})"]
    lines += ["```", "", "`generate()` stops at the end of a turn (generation_config.json lists "
              "the template's end-of-turn tokens). With xft installed: "
              f"`xft chat {name}`.", ""]
    return "\n".join(lines)


def _is_hub_id(path):
    from xft.paths import is_hub_id

    return is_hub_id(path) and not Path(path).expanduser().exists()


def write_card(folder, facts, name, adapter, merged_into=None):
    """Write README.md into `folder` (a staging folder) for the artifact named `name`."""
    text = render_card(facts, name, adapter, merged_into)
    (Path(folder) / CARD_FILE).write_text(text, encoding="utf-8")
