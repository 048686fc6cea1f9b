"""The plan of a run: device memory by term, verdict, cheaper alternatives, speed.

The step's tensor memory is measured on one process (xft.estimate.memory);
what several processes and DeepSpeed ZeRO change is applied to the measured
terms here (they cannot run on fake tensors):
  DDP (nproc > 1, no DeepSpeed)   + one more copy of the gradients (DDP's buckets)
  ZeRO-1                          optimizer states / nproc
  ZeRO-2                          and gradients / nproc
  ZeRO-3                          and weights / nproc
  offload_optimizer: cpu          optimizer states and the update's temporaries leave the GPU
  offload_param: cpu              weights leave the GPU
  16-bit trainable weights        DeepSpeed keeps fp32 master copies (+4 bytes each,
                                  partitioned like the optimizer states)
Framework overhead (CUDA context and kernels, the caching allocator's rounding
and fragmentation) is assumed, not measured: CONTEXT_GIB plus FRAGMENTATION of
the tensor peak.
"""

import dataclasses
import math
from dataclasses import dataclass, field

from xft.estimate import memory as mem
from xft.estimate.gpus import GIB

CONTEXT_GIB = 0.5
FRAGMENTATION = 0.05
DEFAULT_MFU = 0.3


@dataclass
class Parallelism:
    nproc: int = 1
    zero_stage: int = 0  # 0: no DeepSpeed
    offload_optimizer: bool = False
    offload_params: bool = False
    label: str = "one process"

    @classmethod
    def from_options(cls, nproc=1, deepspeed=None):
        if deepspeed is None:
            return cls(nproc, label=f"{nproc} processes, DDP" if nproc > 1 else "one process")
        from xft.engine.deepspeed_config import load_deepspeed_json

        raw, source = load_deepspeed_json(deepspeed)
        zero = raw.get("zero_optimization", {})
        return cls(nproc, zero.get("stage", 0),
                   zero.get("offload_optimizer", {}).get("device") == "cpu",
                   zero.get("offload_param", {}).get("device") == "cpu",
                   f"{nproc} process{'es' if nproc > 1 else ''}, DeepSpeed {source.stem}")


@dataclass
class DeviceMemory:
    terms: dict  # term → bytes on each GPU at the peak
    tensors: int
    overhead: int

    @property
    def total(self):
        return self.tensors + self.overhead


def device_memory(step, par):
    """Per-GPU bytes at the peak, by term, for `par` (see the module doc)."""
    roles = dict(step.at_peak)
    n = max(par.nproc, 1)
    weights = roles.pop(mem.WEIGHTS, 0)
    trainable = sum(v for k, v in step.weights.items() if "trainable" in k)
    terms = {
        "weights, frozen": weights - min(trainable, weights),
        "weights, trainable": min(trainable, weights),
        "gradients": roles.pop(mem.GRADIENTS, 0),
        "optimizer states": roles.pop(mem.OPTIMIZER, 0),
        "activations": roles.pop(mem.ACTIVATIONS, 0) + roles.pop(mem.WEIGHT_COPIES, 0),
        "logits/loss buffer": roles.pop(mem.LOSS, 0),
        "cuBLAS workspaces": roles.pop(mem.CUBLAS, 0),
        "temporaries (backward, optimizer)": sum(roles.values()),
    }
    if par.zero_stage == 0 and n > 1:
        terms["DDP gradient buckets"] = step.gradients
    if par.zero_stage >= 1:
        sixteen_bit = sum(v for k, v in step.weights.items()
                          if "trainable" in k and not k.startswith("float32"))
        terms["optimizer states"] += 2 * sixteen_bit  # fp32 master copies
        terms["optimizer states"] /= n
    if par.zero_stage >= 2:
        terms["gradients"] /= n
    if par.zero_stage >= 3:
        terms["weights, frozen"] /= n
        terms["weights, trainable"] /= n
    if par.offload_optimizer:
        terms["optimizer states"] = 0
        terms["temporaries (backward, optimizer)"] = roles.get(mem.BACKWARD, 0)
    if par.offload_params:
        terms["weights, frozen"] = terms["weights, trainable"] = 0
    terms = {k: int(v) for k, v in terms.items()}
    tensors = sum(terms.values())
    return DeviceMemory(terms, tensors, int(CONTEXT_GIB * GIB + FRAGMENTATION * tensors))


@dataclass
class Alternative:
    change: str
    total: int
    fits: bool


@dataclass
class Plan:
    experiment: object
    step: object
    parallel: Parallelism
    device: DeviceMemory
    gpu: object
    speed: object = None
    data: object = None  # DataSize, when the data could be counted
    alternatives: list = field(default_factory=list)

    @property
    def fits(self):
        return self.gpu is None or self.device.total <= self.gpu.memory_gib * GIB


@dataclass
class DataSize:
    samples: int  # micro-batch rows of one epoch (packed rows, or samples)
    tokens: int
    label_tokens: int


def plan_run(experiment, gpu=None, nproc=1, deepspeed=None, mfu=DEFAULT_MFU,
             alternatives=True, count_data=True, log=print):
    """The Plan of `experiment` on `gpu` (xft.estimate.gpus.Gpu or None)."""
    from xft.estimate.architectures import load_architecture
    from xft.estimate.speed import estimate_speed

    par = Parallelism.from_options(nproc, deepspeed)
    step = mem.measure_step(experiment)
    plan = Plan(experiment, step, par, device_memory(step, par), gpu)
    config, _ = load_architecture(experiment.model)
    plan.data = data_size(experiment, log) if count_data else None
    fraction = plan.data.label_tokens / plan.data.tokens if plan.data else 1.0
    plan.speed = estimate_speed(experiment, config, step.trainable / max(step.parameters, 1),
                                gpu.bf16_tflops if gpu else None, mfu, fraction)
    if alternatives and not plan.fits:
        plan.alternatives = find_alternatives(experiment, par, gpu, step)
    return plan


def find_alternatives(experiment, par, gpu, step):
    """Each change alone, cheapest first (by what it costs the run), re-measured; then
    the first ones together until it fits, if no single one does."""
    found, changes = [], list(candidate_changes(experiment, par))
    limit = gpu.memory_gib * GIB

    def _total(exp, new_par):  # changes of parallelism only need no new measurement
        measured = step if exp is experiment else mem.measure_step(exp)
        return device_memory(measured, new_par).total

    for label, exp, new_par in changes:
        total = _total(exp, new_par)
        found.append(Alternative(label, total, total <= limit))
    if not any(a.fits for a in found) and len(changes) > 1:
        exp, new_par, labels = experiment, par, []
        for label, _, _ in changes:
            result = _apply(label.split(" (")[0], exp, new_par)
            if result is None:
                continue
            exp, new_par, _ = result
            labels.append(label)
            total = _total(exp, new_par)
            if total <= limit:
                break
        found.append(Alternative(" + ".join(labels), total, total <= limit))
    return found


def candidate_changes(experiment, par):
    """(label, experiment, parallelism) for each change that applies, in CHANGE_ORDER."""
    for label in CHANGE_ORDER:
        result = _apply(label, experiment, par)
        if result is not None:
            exp, new_par, how = result
            yield f"{label} ({how})", exp, new_par


CHANGE_ORDER = ("micro-batch 1, more accumulation", "gradient checkpointing", "ZeRO-2",
                "ZeRO-3", "optimizer offload", "QLoRA", "half the max_length")


def _apply(label, experiment, par):
    """(experiment, parallelism, how to ask for it) with one change, or None when it does
    not apply."""
    e, train = experiment, experiment.train
    if label == "micro-batch 1, more accumulation" and train.batch_size > 1:
        accum = train.grad_accum * train.batch_size
        return (_replace(e, "train", batch_size=1, grad_accum=accum), par,
                f"train.batch_size=1 train.grad_accum={accum}")
    if label == "gradient checkpointing" and not e.model.gradient_checkpointing:
        return (_replace(e, "model", gradient_checkpointing=True), par,
                "model.gradient_checkpointing=True")
    if label == "ZeRO-2" and par.nproc > 1 and par.zero_stage < 2:
        return e, dataclasses.replace(par, zero_stage=2), "--deepspeed zero2"
    if label == "ZeRO-3" and par.nproc > 1 and par.zero_stage < 3:
        return e, dataclasses.replace(par, zero_stage=3), "--deepspeed zero3"
    if label == "optimizer offload" and not par.offload_optimizer:
        stage = max(par.zero_stage, 2)
        return (e, dataclasses.replace(par, zero_stage=stage, offload_optimizer=True),
                f"--deepspeed zero{stage}_offload")
    if label == "QLoRA" and e.model.quantization is None:
        from xft.config.schema import QuantizationCfg

        lora = dataclasses.replace(e.method, type="lora") if e.method.type != "lora" else e.method
        model = dataclasses.replace(e.model, quantization=QuantizationCfg(bits=4))
        how = "model.quantization.bits=4" + ("" if e.method.type == "lora" else " method.type=lora")
        return dataclasses.replace(e, model=model, method=lora), par, how
    if label == "half the max_length" and e.data.max_length >= 512:
        return (_replace(e, "data", max_length=e.data.max_length // 2), par,
                f"data.max_length={e.data.max_length // 2}")
    return None


def _replace(experiment, section, **changes):
    return dataclasses.replace(experiment, **{
        section: dataclasses.replace(getattr(experiment, section), **changes)})


def data_size(experiment, log=print):
    """Tokens of one epoch, counted by building the datasets as training does (through
    the cache), when the datasets and the tokenizer are local files; else None."""
    from pathlib import Path

    from xft.paths import resolve_path

    tokenizer_path = resolve_path(experiment.tokenizer.path or experiment.model.path)
    paths = [resolve_path(d.path) for d in experiment.datasets] + [tokenizer_path]
    if not all(Path(p).exists() for p in paths):
        return None
    from xft.build import build

    dataset = build(experiment, parts=("data",), log=lambda *_: None).dataset
    samples = [dataset[i] for i in range(len(dataset))]
    tokens = sum(len(s["input_ids"]) for s in samples)
    labels = sum(sum(1 for x in s["labels"][1:] if x != -100) for s in samples)
    return DataSize(len(samples), tokens, labels)


# ---------------------------------------------------------------- printing


def gib(nbytes):
    return f"{nbytes / GIB:.2f} GiB"


def plan_lines(plan):
    e, step, dev = plan.experiment, plan.step, plan.device
    method = e.method.type + (" (QLoRA, 4-bit)" if e.model.quantization else "")
    rows, length = step.batch_shape
    lines = [
        f"architecture: {step.architecture_source}",
        f"parameters: {step.parameters / 1e6:,.1f}M, trainable {step.trainable / 1e6:,.2f}M "
        f"({method}); {plan.parallel.label}",
        f"micro-batch: {rows} x {length} tokens ({'packed rows' if e.data.pack else 'padded'}), "
        f"grad_accum {e.train.grad_accum}; gradient checkpointing "
        f"{'on' if e.model.gradient_checkpointing else 'off'}; attention "
        f"{e.model.attn_implementation}; loss "
        f"{'labels-only, chunked' if e.train.loss_at_labels_only else 'full logits'}; "
        f"mixed precision {e.train.mixed_precision}",
        "peak GPU memory per process (measured on fake tensors, one training step):",
    ]
    for term, nbytes in dev.terms.items():
        detail = ""
        if term.startswith("weights, frozen") and step.weights:
            detail = "  (" + ", ".join(f"{k} {gib(v)}" for k, v in step.weights.items()
                                       if "trainable" not in k) + ")"
        lines.append(f"  {term:<36}{gib(nbytes):>12}{detail}")
    lines.append(f"  {'framework overhead (assumed)':<36}{gib(dev.overhead):>12}")
    lines.append(f"  {'total':<36}{gib(dev.total):>12}")
    lines.extend(f"note: {n}" for n in step.notes)
    if plan.gpu is not None:
        verdict = "fits" if plan.fits else "does NOT fit"
        lines.append(f"verdict: {verdict} on {plan.gpu.name} ({plan.gpu.memory_gib:.1f} GiB)")
    for alt in plan.alternatives:
        lines.append(f"  try {alt.change}: {gib(alt.total)} "
                     f"({'fits' if alt.fits else 'does not fit'})")
    lines.extend(speed_lines(plan))
    return lines


def speed_lines(plan):
    speed, e = plan.speed, plan.experiment
    lines = [f"compute: {speed.flops_per_token / 1e9:,.1f} GFLOP per trained token "
             f"(decoder {speed.decoder_weights / 1e6:,.0f}M matmul weights, head "
             f"{speed.head_weights / 1e6:,.0f}M)"]
    if speed.tokens_per_second is None:
        lines.append("speed: name a GPU (--gpu) for tokens/s")
        return lines
    n = max(plan.parallel.nproc, 1)
    rate = speed.tokens_per_second * n
    lines.append(f"speed: {rate:,.0f} tokens/s at {speed.mfu:.0%} MFU of {plan.gpu.bf16_tflops:g} "
                 f"bf16 TFLOP/s x {n} GPU (set --mfu)")
    if plan.data is None:
        lines.append("epoch: data size unknown here (datasets or tokenizer not local); "
                     f"{duration(1e6 / rate)} per million tokens")
    else:
        steps = math.ceil(plan.data.samples / (e.train.batch_size * n)) // e.train.grad_accum
        lines.append(f"epoch: {plan.data.tokens:,} tokens ({plan.data.samples:,} rows, "
                     f"{max(steps, 1):,} optimizer steps): {duration(plan.data.tokens / rate)}; "
                     f"{e.train.epochs} epoch(s): {duration(e.train.epochs * plan.data.tokens / rate)}")
    return lines


def duration(seconds):
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def warn_if_too_big(experiment, nproc=1, deepspeed=None, warn=print):
    """`xft train` on a GPU: plan the run's memory and warn (never fail) when it will not
    fit; `xft train --no-plan` skips this."""
    from xft.estimate.gpus import local_gpu

    gpu = local_gpu()
    if gpu is None:
        return None
    try:
        plan = plan_run(experiment, gpu, nproc, deepspeed, alternatives=False, count_data=False)
    except Exception as e:  # the plan is advice: never stop a run because of it
        warn(f"xft: warning: could not plan this run's memory ({type(e).__name__}: {e}); "
             "training anyway")
        return None
    if not plan.fits:
        warn(f"xft: warning: this run needs about {gib(plan.device.total)} per GPU and "
             f"{gpu.name} has {gpu.memory_gib:.1f} GiB; it will probably run out of memory. "
             "`xft plan CONFIG` lists cheaper settings; `--no-plan` skips this check")
    return plan
