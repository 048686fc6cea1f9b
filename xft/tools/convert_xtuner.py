"""An XTuner Python config → an xft config dict, for `xft convert-config`.

An XTuner config imports xtuner, peft, transformers and mmengine classes at its
top, so it cannot be executed without XTuner installed (and executing a file to
read its settings would run its code). It is read instead: the module's top-level
assignments are evaluated in order over literals, names bound earlier, `dict(...)`
calls and arithmetic; an imported name or an attribute of one stays a symbol
(`PROMPT_TEMPLATE.qwen_chat`, `torch.bfloat16`, `AdamW`). The structures XTuner's
runner builds from (`model`, `train_dataloader`, `optim_wrapper`, `param_scheduler`,
`train_cfg`, `default_hooks`, `custom_hooks`, `randomness`) are then mapped to
xft's keys (docs/migrating.md has the table); what is not carried over is named in
the notes.
"""

import ast
import operator
from dataclasses import dataclass

from xft.errors import ConfigError
from xft.tools.convert_config import put_dotted


@dataclass(frozen=True)
class Symbol:
    """An imported name, or an attribute of one, e.g. 'PROMPT_TEMPLATE.qwen_chat'."""

    name: str

    @property
    def last(self):
        return self.name.rsplit(".", 1)[-1]


UNKNOWN = Symbol("<not evaluated>")
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
             ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}

# XTuner's PROMPT_TEMPLATE names → xft's template names.
TEMPLATES = {"default": "default", "zephyr": "zephyr", "internlm2_chat": "internlm2_chat",
             "llama2_chat": "llama2_chat", "llama3_chat": "llama3_chat",
             "qwen_chat": "qwen2_chat", "chatglm3": "chatglm3", "mistral": "mistral",
             "mixtral": "mistral", "gemma": "gemma", "phi3_chat": "phi3",
             "deepseek_v2": "deepseek_chat", "vicuna": "vicuna", "yi_chat": "yi_chat"}
# XTuner's dataset map functions → xft's format names (None: records in XTuner's own
# `conversation` format).
FORMATS = {None: "xtuner", "alpaca_map_fn": "alpaca", "alpaca_zh_map_fn": "alpaca_zh",
           "oasst1_map_fn": "guanaco", "openai_map_fn": "openai",
           "pretrain_map_fn": "pretrain"}
DTYPES = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32"}


def read_settings(text, filename):
    """The module's top-level names → their values (dicts, lists, literals, Symbols)."""
    try:
        tree = ast.parse(text, filename=filename)
    except SyntaxError as e:
        raise ConfigError(f"not a Python config ({e.msg}, line {e.lineno})") from None
    env = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                env[alias.asname or alias.name.split(".")[0]] = Symbol(alias.name)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                env[alias.asname or alias.name] = Symbol(alias.name)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            env[node.targets[0].id] = _value(node.value, env)
    return env


def _value(node, env):
    """The value of an expression, UNKNOWN where it is not a plain setting."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env.get(node.id, UNKNOWN)
    if isinstance(node, ast.Attribute):
        base = _value(node.value, env)
        return Symbol(f"{base.name}.{node.attr}") if isinstance(base, Symbol) else UNKNOWN
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(item, env) for item in node.elts]
    if isinstance(node, ast.Dict):
        return {_value(k, env): _value(v, env) for k, v in zip(node.keys, node.values)
                if k is not None}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id == "dict" and not node.args:
        return {kw.arg: _value(kw.value, env) for kw in node.keywords if kw.arg}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _value(node.operand, env)
        return -value if _number(value) else UNKNOWN
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = _value(node.left, env), _value(node.right, env)
        if _number(left) and _number(right):
            return OPERATORS[type(node.op)](left, right)
    return UNKNOWN


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type(spec):
    """The last part of a dict's `type` symbol ('' when there is none)."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    return kind.last if isinstance(kind, Symbol) else ""


def convert_xtuner(text, filename):
    """(xft config dict, notes) for an XTuner config's text; ConfigError (without the
    file's name) when it is not one."""
    env = read_settings(text, filename)
    out, notes = {}, []

    def put(dotted, value):
        put_dotted(out, dotted, value)

    model = env.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("llm"), dict):
        raise ConfigError("no `model = dict(..., llm=dict(...))`: not an XTuner training "
                          "config")
    if _type(model) != "SupervisedFinetune":
        raise ConfigError(f"model type {_type(model) or '?'}: convert-config "
                          "converts XTuner's SupervisedFinetune configs; for DPO/reward "
                          "configs write xft's objective by hand (docs/preference.md)")
    _model(model, put, notes)
    _data(env, put, notes)
    _optimization(env, put, notes)
    _runtime(env, put, notes)
    return out, notes


def _model(model, put, notes):
    llm = model["llm"]
    path = llm.get("pretrained_model_name_or_path")
    if not isinstance(path, str):
        raise ConfigError("model.llm.pretrained_model_name_or_path is not a plain string")
    put("model.path", path)
    if llm.get("trust_remote_code"):
        put("model.trust_remote_code", True)
        put("tokenizer.trust_remote_code", True)
    dtype = llm.get("torch_dtype")
    if isinstance(dtype, Symbol) and dtype.last in DTYPES:
        put("model.dtype", DTYPES[dtype.last])
    quantization = llm.get("quantization_config")
    if isinstance(quantization, dict):
        bits = 4 if quantization.get("load_in_4bit") else 8 if quantization.get(
            "load_in_8bit") else None
        if bits:
            put("model.quantization", {"bits": bits})
    lora = model.get("lora")
    if isinstance(lora, dict):
        put("method.type", "lora")
        for theirs, ours in (("r", "r"), ("lora_alpha", "alpha"), ("lora_dropout", "dropout")):
            if _number(lora.get(theirs)):
                put(f"method.{ours}", lora[theirs])
        targets = lora.get("target_modules")
        if isinstance(targets, list) and all(isinstance(t, str) for t in targets):
            put("method.target_modules", targets)
    else:
        put("method.type", "full")
    if model.get("use_varlen_attn") is True:
        notes.append("use_varlen_attn: not converted (xft's packing keeps samples apart "
                     "with per-sample position_ids)")


def _datasets(spec):
    """The process_hf_dataset dicts of a dataloader's dataset (ConcatDataset unfolded)."""
    if _type(spec) == "ConcatDataset":
        return [d for part in spec.get("datasets", []) for d in _datasets(part)]
    return [spec]


def _data(env, put, notes):
    loader = env.get("train_dataloader")
    if not isinstance(loader, dict):
        raise ConfigError("no `train_dataloader = dict(...)`: not an XTuner training config")
    datasets, template = [], None
    for spec in _datasets(loader.get("dataset")):
        if _type(spec) != "process_hf_dataset":
            notes.append(f"dataset of type {_type(spec) or '?'}: not converted (only "
                         "process_hf_dataset is)")
            continue
        source = spec.get("dataset") if isinstance(spec.get("dataset"), dict) else {}
        path = source.get("path")
        if path in ("json", "csv", "parquet", "text") and source.get("data_files"):
            path = source["data_files"]
        if isinstance(path, list) and len(path) == 1:
            path = path[0]
        if not isinstance(path, str):
            notes.append("a dataset whose path is not a plain string: not converted")
            continue
        map_fn = spec.get("dataset_map_fn")
        name = map_fn.last if isinstance(map_fn, Symbol) else None
        if name not in FORMATS:
            notes.append(f"dataset {path}: {name}: no xft format of that name; the dataset "
                         "is given format 'xtuner' — write a map function for it "
                         "(docs/formats.md)")
        datasets.append({"path": path, "format": FORMATS.get(name, "xtuner")})
        if _number(spec.get("max_length")):
            put("data.max_length", spec["max_length"])
        if isinstance(spec.get("pack_to_max_length"), bool):
            put("data.pack", spec["pack_to_max_length"])
        template_fn = spec.get("template_map_fn")
        if isinstance(template_fn, dict) and isinstance(template_fn.get("template"), Symbol):
            template = template_fn["template"].last
    if not datasets:
        raise ConfigError("no dataset could be converted")
    put("datasets", datasets)
    if _number(loader.get("batch_size")):
        put("train.batch_size", loader["batch_size"])
    if template is not None:
        put("template", TEMPLATES.get(template, "auto"))
        if template not in TEMPLATES:
            notes.append(f"prompt_template: {template!r} has no named xft template; 'auto' "
                         "uses the tokenizer's own (check it: xft template check MODEL)")


def _optimization(env, put, notes):
    wrapper = env.get("optim_wrapper") if isinstance(env.get("optim_wrapper"), dict) else {}
    optimizer = wrapper.get("optimizer") if isinstance(wrapper.get("optimizer"), dict) else {}
    if _type(optimizer) not in ("", "AdamW"):
        notes.append(f"optimizer {_type(optimizer)}: not converted; xft's default AdamW "
                     "applies (other optimizers: docs/config.md, optim.type)")
    for theirs, ours in (("lr", "optim.lr"), ("weight_decay", "optim.weight_decay")):
        if _number(optimizer.get(theirs)):
            put(ours, optimizer[theirs])
    betas = optimizer.get("betas")
    if isinstance(betas, list) and len(betas) == 2 and all(map(_number, betas)):
        put("optim.betas", betas)
    clip = wrapper.get("clip_grad")
    if isinstance(clip, dict) and _number(clip.get("max_norm")):
        put("optim.max_grad_norm", clip["max_norm"])
    if _number(wrapper.get("accumulative_counts")):
        put("train.grad_accum", wrapper["accumulative_counts"])
    loop = env.get("train_cfg") if isinstance(env.get("train_cfg"), dict) else {}
    epochs = loop.get("max_epochs")
    if _number(epochs):
        put("train.epochs", max(1, int(epochs)))
    if _number(loop.get("max_iters")):
        put("train.max_steps", loop["max_iters"])
    # XTuner's warmup: a LinearLR from 0 to warmup_ratio × max_epochs, then cosine.
    schedulers = env.get("param_scheduler")
    for spec in schedulers if isinstance(schedulers, list) else []:
        if _type(spec) == "LinearLR" and _number(spec.get("end")) and _number(epochs):
            put("train.warmup_ratio", round(spec["end"] / epochs, 12))
        elif _type(spec) not in ("LinearLR", "CosineAnnealingLR"):
            notes.append(f"param_scheduler {_type(spec) or '?'}: not converted (xft's "
                         "default: linear warmup then cosine, train.lr_scheduler)")


def _runtime(env, put, notes):
    hooks = env.get("default_hooks") if isinstance(env.get("default_hooks"), dict) else {}
    checkpoint = hooks.get("checkpoint") if isinstance(hooks.get("checkpoint"), dict) else {}
    if _number(checkpoint.get("interval")):
        put("train.save_interval", checkpoint["interval"])
    keep = checkpoint.get("max_keep_ckpts")
    if _number(keep):  # XTuner's -1 (keep all) is xft's 0
        put("train.save_total_limit", max(0, keep))
    logger = hooks.get("logger") if isinstance(hooks.get("logger"), dict) else {}
    if _number(logger.get("interval")):
        put("train.log_interval", logger["interval"])
    for hook in env.get("custom_hooks") if isinstance(env.get("custom_hooks"), list) else []:
        if _type(hook) != "EvaluateChatHook":
            continue
        inputs = hook.get("evaluation_inputs")
        if isinstance(inputs, list) and all(isinstance(i, str) for i in inputs):
            evaluation = {"prompts": inputs}
            if _number(hook.get("every_n_iters")):
                evaluation["interval"] = hook["every_n_iters"]
            put("evaluation", evaluation)
        system = hook.get("system")
        if isinstance(system, str) and system:
            put("system", system)
        elif isinstance(system, Symbol):
            notes.append(f"SYSTEM = {system.name}: XTuner's named system prompt is not "
                         "converted; set `system` to its text")
    seed = env.get("randomness", {}).get("seed") if isinstance(env.get("randomness"),
                                                                dict) else None
    if _number(seed):
        put("seed", seed)
