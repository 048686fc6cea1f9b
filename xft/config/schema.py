"""The experiment schema: every key a config may set, its type and default.

A loaded MMEngine config (a plain nested dict) is turned into these dataclasses
by `validate()`. Unknown keys are never ignored: they fail with the key's full
path and the closest valid name. Top-level names starting with `_` are private
helpers of the config file (e.g. `_max_length = 512`) and are skipped.
"""

import collections.abc
import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Literal, Optional, Union

from xft.errors import ConfigError

REQUIRED = dataclasses.MISSING


@dataclass
class QuantizationCfg:
    """Load the base model's linear layers quantized by bitsandbytes (QLoRA)."""
    bits: Literal[4, 8] = 4
    quant_type: Literal["nf4", "fp4"] = "nf4"  # 4-bit data type
    double_quant: bool = True  # 4-bit: quantize the per-block scales too (~0.4 bit/param saved)
    # dtype the quantized layers compute in (4-bit); None: model.dtype ('auto' → bfloat16
    # on CUDA, float32 on CPU).
    compute_dtype: Optional[Literal["float32", "bfloat16", "float16"]] = None


@dataclass
class ResizeVocabCfg:
    """Grow the embeddings and output head to an extended tokenizer (docs/vocab.md)."""
    # How the new tokens' rows start: 'mean' (mean of the base rows) or 'subword_mean'
    # (mean of the rows of the pieces the base tokenizer splits each new token into).
    init: Literal["mean", "subword_mean"] = REQUIRED
    # The tokenizer the model was trained with; None: the one in model.path.
    base_tokenizer: Optional[str] = None


@dataclass
class RopeScalingCfg:
    """Stretch the rotary position embeddings to a longer context than the model was
    pretrained for, as transformers defines each RoPE type (docs/config.md)."""
    # linear: positions divided by `factor`; dynamic: NTK-aware, only for sequences longer
    # than the model's max_position_embeddings; yarn: YaRN; llama3: Llama 3.1's bands.
    type: Literal["linear", "dynamic", "yarn", "llama3"] = REQUIRED
    factor: float = REQUIRED  # how many times longer the context gets; > 1
    # yarn, llama3: the context the model was pretrained with; None: its max_position_embeddings.
    original_max_position_embeddings: Optional[int] = None
    # llama3 only: the wavelength bands kept / interpolated (None: Llama 3.1's 1 and 4).
    low_freq_factor: Optional[float] = None
    high_freq_factor: Optional[float] = None


@dataclass
class ModelCfg:
    path: str = REQUIRED  # hub id, local directory, or xft://NAME for a shipped model
    # Weights dtype: float32 on CPU; bfloat16/float16 on GPU (trainable LoRA weights stay fp32).
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] = "sdpa"
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    # None: full-precision weights. Set (with method.type='lora') for QLoRA; needs bitsandbytes.
    quantization: Optional[QuantizationCfg] = None
    # None: keep the embeddings. Set when tokenizer.path is an extended tokenizer (xft vocab
    # merge): new rows are added and initialised; they must train (method.modules_to_save).
    resize_vocab: Optional[ResizeVocabCfg] = None
    # None: the model's own position embeddings. Set to train or use a longer context,
    # e.g. dict(type='linear', factor=2.0); written into the exported config.json.
    rope_scaling: Optional[RopeScalingCfg] = None


@dataclass
class TokenizerCfg:
    path: Optional[str] = None  # defaults to model.path
    trust_remote_code: bool = False


@dataclass
class MethodCfg:
    # full: train every weight; lora: low-rank adapters (QLoRA with model.quantization);
    # freeze: train only the top `trainable_layers` decoder layers (and the head if asked).
    type: Literal["full", "lora", "freeze"] = "lora"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # 'all-linear' (every linear layer except the output head) or a list of module names.
    target_modules: Union[str, List[str]] = "all-linear"
    use_dora: bool = False  # LoRA: weight-decomposed adapters (DoRA)
    use_rslora: bool = False  # LoRA: scale by alpha/sqrt(r) instead of alpha/r (rsLoRA)
    # LoRA+: lora_B matrices (and 1-D trainable weights, as in peft) get lr × this ratio.
    loraplus_lr_ratio: Optional[float] = None
    # LoRA: modules trained fully and saved with the adapter (e.g. embed_tokens, lm_head
    # after a vocabulary extension). freeze: further modules to train.
    modules_to_save: List[str] = field(default_factory=list)
    trainable_layers: int = 2  # freeze: how many top decoder layers train
    train_head: bool = False  # freeze: also train the output head (tied: the embeddings too)
    # LoRA: continue training this PEFT adapter (a directory, e.g. an SFT run's work_dir/hf)
    # instead of a fresh one; its own LoRA settings apply (r, alpha, target modules...).
    # Preference objectives keep a frozen copy of it as the reference policy.
    init_adapter: Optional[str] = None


@dataclass
class DatasetCfg:
    path: str = REQUIRED  # file, directory or hub name; xft://data/... for shipped data
    # Name of a format map function (see xft.data.formats and docs/formats.md), or a
    # function record → messages (or → str document) defined in the config file.
    format: Union[str, Callable] = "alpaca"
    # Read a named format from records with other field names: the format's field → the
    # record's, e.g. dict(messages='conversations', role='speaker') (docs/formats.md).
    columns: Dict[str, str] = field(default_factory=dict)
    # ... and other role values: a role → the record's value, e.g. dict(user='human').
    tags: Dict[str, str] = field(default_factory=dict)
    # Values substituted for {{key}} placeholders in every string of a record,
    # e.g. dict(name='Xiaoxi') for self-cognition data.
    placeholders: Dict[str, str] = field(default_factory=dict)
    max_samples: Optional[int] = None  # use at most this many records (first N)
    # Over-long samples of this dataset: 'drop' or 'truncate'; None uses data.truncation.
    truncation: Optional[Literal["drop", "truncate"]] = None
    # Fraction of the final mixture taken from this dataset (up- or down-sampled,
    # seeded). Set it on every dataset or on none; the ratios must sum to 1.
    ratio: Optional[float] = None
    # Hold out part of this dataset for validation: a fraction (0 < x < 1) or a count
    # of its samples, drawn with the seed before mixing; None uses data.test_size.
    test_size: Optional[Union[int, float]] = None


@dataclass
class DataCfg:
    max_length: int = 2048
    # Dataset registry files (JSON/YAML; xft's keys or LLaMA-Factory's dataset_info.json)
    # for entries given as dict(name=...); xft://data/dataset_info.json is consulted last.
    registry: List[str] = field(default_factory=list)
    # What to do with a sample longer than max_length: drop it, or truncate it
    # keeping its final end-of-turn token. Either way it is counted and reported.
    truncation: Literal["drop", "truncate"] = "drop"
    # A bad record fails the run with file/record/field (error) or is skipped and counted.
    on_bad_record: Literal["error", "skip"] = "error"
    # A questionable record (two user turns in a row, a trailing user turn, an unfilled
    # {{placeholder}}, a tool result for no call; docs/errors.md): trained as it is and
    # counted in the data report (warn), or the run stops naming it (error).
    on_questionable: Literal["warn", "error"] = "warn"
    # Which assistant turns of a conversation carry loss: every one ('all') or only the
    # final one ('last'). A message's own `loss` flag overrides this.
    train_on: Literal["all", "last"] = "all"
    shuffle: bool = True
    num_workers: int = 0
    # Size of the mixture when datasets have ratios: a number of samples, or
    # 'sum' (as many as all datasets hold together), 'no_upsample' (largest size
    # that repeats no sample), 'no_downsample' (smallest size that uses every sample).
    mix_size: Union[int, Literal["sum", "no_upsample", "no_downsample"]] = "sum"
    # Pack several samples into each row of up to max_length tokens (per-sample
    # position_ids, no attention across samples).
    pack: bool = False
    # Reuse encoded datasets from the cache; it is keyed on everything that
    # shapes the samples (file contents, tokenizer, template, max_length, ...).
    cache: bool = True
    cache_dir: Optional[str] = None  # default: $XFT_CACHE_DIR or ~/.cache/xft
    # Held out for validation from every dataset without its own test_size: a fraction of
    # each, or a count shared among them in proportion to their sizes (stratified by source).
    test_size: Optional[Union[int, float]] = None


@dataclass
class GaloreCfg:
    """GaLore (gradient low-rank projection) for full fine-tuning: the optimizer states of
    targeted 2-D weights live in a rank-`rank` subspace refreshed every `update_proj_gap`
    steps (the `galore-torch` package, as transformers uses)."""
    rank: int = 128
    update_proj_gap: int = 200
    scale: float = 0.25
    proj_type: Literal["std", "reverse_std", "right", "left", "full"] = "std"
    # Substrings of module names whose 2-D weights are projected; others train plainly.
    target_modules: List[str] = field(default_factory=lambda: ["attn", "mlp"])


@dataclass
class OptimCfg:
    # AdamW (torch); AdamW8bit, PagedAdamW, PagedAdamW8bit (bitsandbytes: 8-bit states,
    # paged to CPU memory under pressure on CUDA); Adafactor (transformers; betas/eps unused);
    # GaLoreAdamW, GaLoreAdamW8bit, GaLoreAdafactor (galore-torch; needs `galore`).
    type: Literal["AdamW", "AdamW8bit", "PagedAdamW", "PagedAdamW8bit", "Adafactor",
                  "GaLoreAdamW", "GaLoreAdamW8bit", "GaLoreAdafactor"] = "AdamW"
    galore: Optional[GaloreCfg] = None
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    max_grad_norm: Optional[float] = 1.0  # None: no clipping (the norm is still logged)


@dataclass
class EarlyStoppingCfg:
    # Stop after this many evaluations in a row without an eval_loss below best - min_delta.
    patience: int = 3
    min_delta: float = 0.0


@dataclass
class TrainCfg:
    # Training engine (xft.engine.engines): MMEngine's Runner or Hugging Face's Trainer
    # (`xft train --engine` overrides).
    engine: Literal["mmengine", "hf"] = "mmengine"
    batch_size: int = 1  # per device, per micro-step
    grad_accum: int = 1
    epochs: int = 1
    max_steps: Optional[int] = None  # optimizer steps; overrides epochs when set
    # transformers' schedules (xft.engine.schedule), each after a linear warmup from 0.
    lr_scheduler: Literal["cosine", "linear", "constant", "cosine_with_min_lr",
                          "warmup_stable_decay", "polynomial"] = "cosine"
    warmup_ratio: float = 0.03
    # Schedule options, each only for the schedules named (None: the default given):
    min_lr_ratio: Optional[float] = None  # cosine_with_min_lr, warmup_stable_decay: floor (0)
    decay_ratio: Optional[float] = None  # warmup_stable_decay: share of steps decaying (0.1)
    lr_end: Optional[float] = None  # polynomial: final lr, below optim.lr (1e-7)
    power: Optional[float] = None  # polynomial: exponent of the decay (1.0: linear)
    log_interval: int = 10
    # Where the logged scalars go besides metrics.jsonl (xft.engine.trackers): any of
    # 'tensorboard', 'wandb', 'mlflow', 'swanlab'; each library's own environment variables
    # choose online/offline. `project`: the W&B/SwanLab project, the MLflow experiment.
    report_to: List[Literal["tensorboard", "wandb", "mlflow", "swanlab"]] = field(
        default_factory=lambda: ["tensorboard"])
    project: str = "xft"
    save_interval: int = 500  # optimizer steps between checkpoints
    save_total_limit: int = 2  # checkpoints kept on disk (0: all)
    # Validation (needs a held-out split or val_datasets): optimizer steps between
    # evaluations of eval_loss / eval_ppl; None: evaluate once, after the last step.
    eval_interval: Optional[int] = None
    # The objective's validation key (SFT: 'eval_loss'): export the weights of the best
    # value so far to work_dir/best.
    save_best: Optional[str] = None
    export_best: bool = False  # with save_best: work_dir/hf is the best weights, not the last
    early_stopping: Optional[EarlyStoppingCfg] = None
    # Autocast forward and backward to bf16/fp16 while the optimizer updates fp32 master
    # weights (the trainable weights must be float32: model.dtype, or LoRA adapters).
    # 'fp16' needs CUDA (dynamic loss scaling); 'bf16' also runs, slowly, on CPU.
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    # Logits only at positions that carry a label, through the output head in chunks
    # (xft.model.loss.CausalLMLoss); False: logits at every position, as the model's own
    # forward computes them. The loss is the same either way; the switch is for checking.
    loss_at_labels_only: bool = True
    loss_chunk_size: Optional[int] = 1024  # labelled positions per head chunk; None: one chunk


@dataclass
class EvaluationCfg:
    # Prompts answered (greedy, each in a fresh conversation, with the training template)
    # before training, every `interval` optimizer steps and at the end; the answers go to
    # work_dir/chat_samples.jsonl.
    prompts: List[str] = field(default_factory=list)
    interval: Optional[int] = None  # None: only before and after training
    max_new_tokens: int = 64
    # RL runs (objectives 'grpo', 'ppo'): the first N completions of each rollout trained at
    # a logged step (train.log_interval) go to chat_samples.jsonl too, with their rewards
    # (xft.inference.chat_eval.RolloutSamples); 0: none.
    rollout_samples: int = 4


@dataclass
class ObjectiveCfg:
    """What is trained: dict(type='sft', ...the objective's own keys) in a config.

    The other keys are validated against the registered objective's Options
    dataclass (xft.objectives), like every other section."""
    type: str = "sft"
    options: Any = None  # the objective's Options instance; None: its defaults


@dataclass
class Experiment:
    model: ModelCfg = REQUIRED
    datasets: List[DatasetCfg] = REQUIRED
    template: str = REQUIRED  # chat template name, see xft.data.templates
    tokenizer: TokenizerCfg = field(default_factory=TokenizerCfg)
    method: MethodCfg = field(default_factory=MethodCfg)
    objective: ObjectiveCfg = field(default_factory=ObjectiveCfg)
    data: DataCfg = field(default_factory=DataCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    evaluation: EvaluationCfg = field(default_factory=EvaluationCfg)
    # Validation files used whole (besides any held-out test_size split); same keys as
    # `datasets` except ratio and test_size.
    val_datasets: List[DatasetCfg] = field(default_factory=list)
    work_dir: Optional[str] = None  # default: work_dirs/<config name>
    seed: int = 42
    system: Optional[str] = None  # system prompt used for training data without one, and by chat


# Keys that mark a LLaMA-Factory training YAML (docs/migrating.md maps them).
LLAMA_FACTORY_KEYS = {"model_name_or_path", "finetuning_type", "stage"}


def validate(raw: dict) -> Experiment:
    """Build an Experiment from a plain dict, or raise ConfigError naming the key."""
    from xft.config.dataset_registry import resolve_names

    public = {k: v for k, v in raw.items() if not k.startswith("_")}
    foreign = sorted(LLAMA_FACTORY_KEYS & set(public))
    if foreign:
        raise ConfigError(f"this looks like a LLaMA-Factory config ({', '.join(foreign)}); xft "
                          "reads YAML with its own keys: see docs/migrating.md for each key's "
                          "xft place (model_name_or_path → model.path, ...)")
    registries = (public.get("data") or {}).get("registry") if isinstance(
        public.get("data"), dict) else None
    for key in ("datasets", "val_datasets"):
        if key in public:
            public[key] = resolve_names(public[key], registries, key)
    experiment = _build(Experiment, public, path="")
    if not experiment.datasets:
        raise ConfigError("'datasets' is empty: list at least one dataset to train on")
    _check_ranges(experiment)
    _check_rope_scaling(experiment.model.rope_scaling)
    _check_method(experiment.method, experiment.model)
    _check_optim(experiment.optim, experiment.method)
    _check_schedule(experiment.train, experiment.optim)
    _check_validation(experiment)
    _check_save_best(experiment)
    return experiment


def dataset_cfg(entry, key):
    """A DatasetCfg from one dataset entry (a dict as in `datasets`), or ConfigError naming
    `key` (for tools that take a dataset without a config)."""
    return _build(DatasetCfg, entry, key)


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric key: low/high bounds, each inclusive or not."""
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False  # True: value > low (else >= low)
    high_open: bool = False  # True: value < high (else <= high)
    hint: str = ""  # appended to the message, e.g. what to write instead

    def allows(self, value):
        if not math.isfinite(value):  # nan passes every comparison; inf is never meant
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None
                    and (value >= self.high if self.high_open else value > self.high))

    def __str__(self):
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)


AT_LEAST_1 = Range(1)
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1)

# The allowed range of every numeric key (None values are never checked: they mean
# "off" or "default"). `[]` stands for each item of a list. Checked before anything
# heavy runs, so a bad value fails with its key instead of deep inside a library.
RANGES = {
    "seed": Range(0, 2**32 - 1),  # numpy's seed range (transformers.set_seed seeds numpy)
    "method.r": AT_LEAST_1,
    "method.alpha": POSITIVE,
    "method.dropout": Range(0, 1, high_open=True),
    "method.loraplus_lr_ratio": POSITIVE,
    "method.trainable_layers": NON_NEGATIVE,
    "model.rope_scaling.factor": Range(1, low_open=True, hint="; a factor of 1 changes "
                                       "nothing (leave model.rope_scaling unset)"),
    "model.rope_scaling.original_max_position_embeddings": AT_LEAST_1,
    "model.rope_scaling.low_freq_factor": POSITIVE,
    "model.rope_scaling.high_freq_factor": POSITIVE,
    "datasets[].max_samples": Range(1, hint="; leave it unset (None) to use every record"),
    "datasets[].ratio": Range(0, 1, low_open=True),
    "val_datasets[].max_samples": Range(1, hint="; leave it unset (None) to use every record"),
    "data.max_length": Range(2, hint="; a sample needs room for a prompt and an answer"),
    "data.num_workers": NON_NEGATIVE,
    "data.mix_size": AT_LEAST_1,
    "optim.lr": NON_NEGATIVE,  # 0 is a run that changes nothing (tests, baselines)
    "optim.weight_decay": NON_NEGATIVE,
    "optim.betas[]": Range(0, 1, high_open=True),
    "optim.eps": POSITIVE,
    "optim.max_grad_norm": POSITIVE,
    "optim.galore.rank": AT_LEAST_1,
    "optim.galore.update_proj_gap": AT_LEAST_1,
    "optim.galore.scale": POSITIVE,
    "train.batch_size": AT_LEAST_1,
    "train.grad_accum": AT_LEAST_1,
    "train.epochs": AT_LEAST_1,
    "train.max_steps": AT_LEAST_1,
    "train.warmup_ratio": FRACTION,
    "train.min_lr_ratio": FRACTION,
    "train.decay_ratio": Range(0, 1, low_open=True),
    "train.lr_end": NON_NEGATIVE,
    "train.power": POSITIVE,
    "train.log_interval": AT_LEAST_1,
    "train.save_interval": AT_LEAST_1,
    "train.save_total_limit": Range(0, hint=" (0 keeps every checkpoint)"),
    "train.eval_interval": AT_LEAST_1,
    "train.early_stopping.patience": AT_LEAST_1,
    "train.early_stopping.min_delta": NON_NEGATIVE,
    "train.loss_chunk_size": AT_LEAST_1,
    "evaluation.interval": AT_LEAST_1,
    "evaluation.max_new_tokens": AT_LEAST_1,
    "evaluation.rollout_samples": NON_NEGATIVE,
}


def _values_at(obj, key):
    """(full key path, value) for a RANGES key, expanding `[]` over list items."""
    head, _, rest = key.partition(".")
    name, is_list = head.removesuffix("[]"), head.endswith("[]")
    value = getattr(obj, name, None)
    if value is None:
        return
    items = [(f"{name}[{i}]", v) for i, v in enumerate(value)] if is_list else [(name, value)]
    for path, item in items:
        if not rest:
            yield path, item
        else:
            for sub_path, sub_value in _values_at(item, rest):
                yield f"{path}.{sub_path}", sub_value


def _check_ranges(experiment):
    for key, allowed in RANGES.items():
        for path, value in _values_at(experiment, key):
            if isinstance(value, (int, float)) and not allowed.allows(value):
                raise ConfigError(f"'{path}' must be {allowed}, got {value!r}{allowed.hint}")


LORA_ONLY = ("use_dora", "use_rslora", "loraplus_lr_ratio", "init_adapter")


def _check_rope_scaling(rope):
    if rope is None:
        return
    for name in ("low_freq_factor", "high_freq_factor"):
        if getattr(rope, name) is not None and rope.type != "llama3":
            raise ConfigError(f"'model.rope_scaling.{name}' applies to type='llama3' only, "
                              f"got type '{rope.type}'")
    if rope.original_max_position_embeddings is not None and rope.type not in ("yarn", "llama3"):
        raise ConfigError("'model.rope_scaling.original_max_position_embeddings' applies to "
                          f"type 'yarn' or 'llama3' only, got type '{rope.type}'")
    low, high = rope.low_freq_factor or 1.0, rope.high_freq_factor or 4.0
    if rope.type == "llama3" and high <= low:
        raise ConfigError(f"'model.rope_scaling.high_freq_factor' ({high:g}) must be above "
                          f"low_freq_factor ({low:g})")


def _check_method(method, model):
    """Combinations the schema's types cannot express."""
    if model.quantization is not None and method.type != "lora":
        raise ConfigError(f"'model.quantization' needs method.type='lora' (QLoRA), got "
                          f"'{method.type}': quantized weights cannot be trained directly")
    if method.type != "lora":
        for name in LORA_ONLY:
            if getattr(method, name) not in (False, None):
                raise ConfigError(f"'method.{name}' applies to method.type='lora' only, "
                                  f"got type '{method.type}'")
    if method.type == "full" and method.modules_to_save:
        raise ConfigError("'method.modules_to_save' is meaningless with method.type='full' "
                          "(every module trains)")


def _check_optim(optim, method):
    galore = optim.type.startswith("GaLore")
    if galore and optim.galore is None:
        raise ConfigError(f"'optim.type'='{optim.type}' needs 'optim.galore' "
                          "(e.g. dict(rank=128, update_proj_gap=200, scale=0.25))")
    if optim.galore is not None and not galore:
        raise ConfigError(f"'optim.galore' applies to the GaLore optimizers, got "
                          f"'optim.type'='{optim.type}'")
    if galore and method.type == "lora":
        raise ConfigError("GaLore projects the gradients of full-rank weights: use it with "
                          "method.type='full' or 'freeze', not 'lora'")
    if galore and method.loraplus_lr_ratio is not None:
        raise ConfigError("'method.loraplus_lr_ratio' and GaLore cannot be combined")


SCHEDULE_OPTIONS = {"min_lr_ratio": ("cosine_with_min_lr", "warmup_stable_decay"),
                    "decay_ratio": ("warmup_stable_decay",),
                    "lr_end": ("polynomial",), "power": ("polynomial",)}
# What an unset (None) schedule option means.
SCHEDULE_DEFAULTS = dict(min_lr_ratio=0.0, decay_ratio=0.1, lr_end=1e-7, power=1.0)


def schedule_option(train, key):
    value = getattr(train, key)
    return SCHEDULE_DEFAULTS[key] if value is None else value


def _check_schedule(train, optim):
    for key, schedules in SCHEDULE_OPTIONS.items():
        if getattr(train, key) is not None and train.lr_scheduler not in schedules:
            raise ConfigError(f"'train.{key}' applies to train.lr_scheduler "
                              f"{' or '.join(repr(s) for s in schedules)}, got "
                              f"'train.lr_scheduler'={train.lr_scheduler!r}")
    lr_end = schedule_option(train, "lr_end")
    if train.lr_scheduler == "polynomial" and lr_end >= optim.lr:
        raise ConfigError(f"'train.lr_end'={lr_end:g} must be below "
                          f"'optim.lr'={optim.lr:g} (the polynomial decays from one to the other)")


def _check_test_size(value, key):
    if value is None:
        return
    if isinstance(value, float) and not 0 < value < 1:
        raise ConfigError(f"'{key}' as a fraction must be between 0 and 1, got {value}")
    if isinstance(value, int) and value < 1:
        raise ConfigError(f"'{key}' as a count must be >= 1, got {value}")


def _check_validation(experiment):
    """A validation set exists when anything asks for evaluation; keys fit together."""
    _check_test_size(experiment.data.test_size, "data.test_size")
    for i, ds in enumerate(experiment.datasets):
        _check_test_size(ds.test_size, f"datasets[{i}].test_size")
    for i, ds in enumerate(experiment.val_datasets):
        for key in ("ratio", "test_size"):
            if getattr(ds, key) is not None:
                raise ConfigError(f"'val_datasets[{i}].{key}' is not allowed: validation "
                                  "files are used whole")
    has_validation = (experiment.data.test_size is not None or experiment.val_datasets
                      or any(ds.test_size is not None for ds in experiment.datasets))
    train = experiment.train
    for key in ("eval_interval", "save_best", "early_stopping"):
        if getattr(train, key) is not None and not has_validation:
            raise ConfigError(f"'train.{key}' needs a validation set: set 'data.test_size', "
                              "a dataset's 'test_size', or 'val_datasets'")
    if train.export_best and train.save_best is None:
        raise ConfigError("'train.export_best' needs train.save_best (the objective's "
                          "validation key, e.g. 'eval_loss')")


def _build_objective(raw, path):
    """ObjectiveCfg from dict(type=NAME, **options): options checked against the objective's
    own Options dataclass (imported only when a config sets the section)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"'{path}' must be a dict, got {type(raw).__name__}")
    from xft.objectives import objective_class

    options = dict(raw)
    kind = options.pop("type", ObjectiveCfg.type)
    return ObjectiveCfg(kind, _build(objective_class(kind).Options, options, path))


def _check_save_best(experiment):
    if experiment.train.save_best is None:
        return
    from xft.objectives import objective_class

    key = objective_class(experiment.objective.type).validation_key
    if experiment.train.save_best != key:
        raise ConfigError(f"'train.save_best' must be the objective's validation key '{key}' "
                          f"(objective '{experiment.objective.type}'), got "
                          f"{experiment.train.save_best!r}")


def _build(cls, raw, path):
    if not isinstance(raw, dict):
        raise ConfigError(f"'{path}' must be a dict, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(_unknown_key_message(_join(path, key), key, fields))
    values = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in raw:
            values[name] = _convert(hints[name], raw[name], key_path)
        elif f.default is REQUIRED and f.default_factory is REQUIRED:
            raise ConfigError(f"missing required key '{key_path}'")
    return cls(**values)


def _convert(hint, value, path):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is ObjectiveCfg:
        return _build_objective(value, path)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[-1] if len(errors) == 1 else
                          f"'{path}' has an invalid value {value!r} ({_type_name(hint)} expected)")
    if origin is Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint_text = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"'{path}' must be one of {list(args)}, got {value!r}{hint_text}")
        return value
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{path}' must be a list, got {type(value).__name__}")
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"'{path}' must be a dict, got {type(value).__name__}")
        return {k: _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if origin is collections.abc.Callable or hint is Callable:
        if not callable(value):
            raise ConfigError(f"'{path}' must be a function, got {type(value).__name__} {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"'{path}' must be {hint.__name__}, got bool")
    if not isinstance(value, hint):
        raise ConfigError(f"'{path}' must be {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


# Keys that were renamed: the old name gets a message naming the new one.
RENAMED_KEYS = {"train.backend": "train.engine"}


def _unknown_key_message(key_path, key, fields):
    if key_path in RENAMED_KEYS:
        return f"config key '{key_path}' is now '{RENAMED_KEYS[key_path]}'"
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
    suggestion = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(fields)}"
    if key_path == key and not close:  # a top-level name: maybe a helper variable
        suggestion += (f". Every top-level name of a config is a config key, except names "
                       f"starting with '_' (helpers: call it '_{key}') and functions")
    return f"unknown config key '{key_path}'{suggestion}"


def _type_name(hint):
    if typing.get_origin(hint) is Union:
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if hint is Callable or typing.get_origin(hint) is collections.abc.Callable:
        return "function"
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _join(path, key):
    return f"{path}.{key}" if path else key


def check_paths(experiment, data=True):
    """ConfigError unless the local paths the config names exist (a missing local path
    is never handed to the hub resolver). `data=False`: the model and tokenizer only."""
    from xft.paths import MODEL_FILES, TOKENIZER_FILES, check_local, check_local_data

    model = experiment.model
    check_local(model.path, "model directory", "model.path", need=MODEL_FILES)
    if experiment.tokenizer.path is not None:
        check_local(experiment.tokenizer.path, "tokenizer directory", "tokenizer.path",
                    need=TOKENIZER_FILES)
    else:  # the tokenizer is read from the model directory
        check_local(model.path, "tokenizer directory", "model.path", need=TOKENIZER_FILES)
    if model.resize_vocab is not None and model.resize_vocab.base_tokenizer is not None:
        check_local(model.resize_vocab.base_tokenizer, "tokenizer directory",
                    "model.resize_vocab.base_tokenizer", need=TOKENIZER_FILES)
    for key in ("datasets", "val_datasets") if data else ():
        for i, ds in enumerate(getattr(experiment, key)):
            check_local_data(ds.path, f"{key}[{i}].path")
