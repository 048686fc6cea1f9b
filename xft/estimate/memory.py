"""Peak memory of one training step, measured on fake tensors.

The config's model is built from its config.json on the meta device (no
weights), its parameters become fake tensors (shapes and dtypes, no storage),
and then xft's own code runs as training runs it: the method (LoRA, QLoRA's
bitsandbytes layers, gradient checkpointing), CausalLMLoss with the config's
loss switches, the optimizer of xft.model.optimizer, clipping. LiveBytes
counts every storage the step creates, so new architectures and changes to
xft's loss are covered without a formula.

Data-dependent operations (a boolean mask of the labels, `.item()` in AdamW,
transformers' mask checks) cannot run on fake tensors. The planned batch is
small integer tensors (ids, positions, labels), so RealShadows also computes
every operation whose inputs are all such small tensors for real, and answers
data-dependent questions from those real values.

The step simulated: an optimizer step on zero gradients (so the optimizer
states exist, as after the run's first step), zero gradients again when
gradients accumulate (what an earlier micro-batch of the step leaves), then
the planned micro-batch, clipping and an optimizer step. The peak of that
sequence is the peak of every later step of the run.
"""

import contextlib
import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import (DataDependentOutputException,
                                           DynamicOutputShapeException, FakeTensor,
                                           FakeTensorMode,
                                           unset_fake_temporarily)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map
from torch.utils.weak import WeakIdKeyDictionary

from xft.errors import ConfigError
from xft.estimate.architectures import load_architecture
from xft.estimate.tracker import LiveBytes

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Outputs of at most this many elements computed from planned-batch tensors get a real
# twin (RealShadows); larger ones (a [batch, 1, L, L] mask of a long row) stay fake only.
SHADOW_MAX_ELEMENTS = 1 << 22

# Roles of the bytes alive at the peak (LiveBytes blocks).
WEIGHTS, WEIGHT_COPIES, GRADIENTS, OPTIMIZER = ("weights", "weight copies", "gradients",
                                                "optimizer states")
ACTIVATIONS, LOSS, BACKWARD, OPTIMIZER_TEMP = ("activations", "logits/loss buffer",
                                               "backward temporaries", "optimizer temporaries")
CUBLAS = "cuBLAS workspaces"

# PyTorch gives each thread that runs cuBLAS its own workspace from the caching allocator,
# alive for the whole run: training has two such threads (the forward's and autograd's
# backward thread). 32 MiB each was measured on an H200 (docs/benchmarks.md) and is
# PyTorch's default for Hopper; its default for older GPUs is smaller, so there the
# plan errs high by less than 50 MiB. A fake-tensor step cannot see these buffers.
CUBLAS_WORKSPACE_BYTES, CUBLAS_THREADS = 32 * 2**20, 2


@dataclass
class StepMemory:
    """What one training step holds, in bytes (device memory of tensors only)."""
    peak: int
    at_peak: dict  # role → bytes alive at the peak
    weights: dict  # 'bfloat16', 'float32 (trainable)', 'uint8 (4-bit)'... → bytes
    parameters: int  # logical count (a 4-bit weight counts its unpacked elements)
    trainable: int
    gradients: int  # all gradients of a step (bytes)
    optimizer_states: int
    architecture_source: str
    batch_shape: tuple
    notes: list = field(default_factory=list)

    @property
    def weight_bytes(self):
        return sum(self.weights.values())


def weights_dtype(model_cfg, target):
    if model_cfg.dtype == "auto":
        return torch.bfloat16 if target == "cuda" else torch.float32
    return DTYPES[model_cfg.dtype]


def measure_step(experiment, target="cuda"):
    """StepMemory of `experiment` (an xft Experiment) training on `target` ('cuda' or 'cpu').

    The fake tensors live on the CPU (a CPU build of torch cannot make fake CUDA
    tensors); for a CUDA target the step takes CUDA's code paths where xft's or
    torch's differ (no CPU logits workspace, foreach AdamW).
    """
    config, source = load_architecture(experiment.model)
    dtype = weights_dtype(experiment.model, target)
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with _quiet_bitsandbytes_setup(experiment.model), torch.device("meta"):
        model = _meta_model(config, experiment.model, dtype)
        model = _apply_method(model, experiment, target)
    _make_fake(model, fake)
    model.train()  # as the engines do: dropout and gradient checkpointing act in training
    train = experiment.train
    rows, length = train.batch_size, experiment.data.max_length
    notes = []
    shadows = RealShadows(fake)
    tracker = LiveBytes()
    model_weights = _register_weights(model, tracker)
    planned = _batch(experiment, rows, length, config)
    if target == "cuda":
        use_fused_dropout(model)
    with fake, shadows, tracker:
        from xft.model.loss import CausalLMLoss, unwrap_causal_lm
        from xft.model.optimizer import build_optimizer

        loss = CausalLMLoss(train.loss_at_labels_only, train.loss_chunk_size)
        if target == "cuda":
            loss.workspace = None  # CausalLMLoss uses it on CPU only (xft.model.loss)
        optimizer = build_optimizer(model, planned_optimizer(experiment, notes),
                                    experiment.method)
        if target == "cuda":  # torch's default for CUDA parameters
            for group in optimizer.param_groups:
                group["foreach"] = True
        decoder = unwrap_causal_lm(model).get_decoder()
        hook = decoder.register_forward_hook(lambda *_: setattr(tracker, "phase", LOSS))
        for p in model.parameters():
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(lambda p: _rename(tracker, p.grad, GRADIENTS))
        step = StepRunner(model, loss, optimizer, experiment, tracker, target)
        step.warm_up()
        if train.grad_accum > 1:
            step.earlier_gradients()
        step.micro_batch(shadows.fake_batch(planned))
        gradients = step.gradient_bytes()
        step.optimizer_step()
        hook.remove()
    states = [t for state in optimizer.state.values() for t in state.values()
              if isinstance(t, torch.Tensor)]
    for t in states:
        _rename(tracker, t, OPTIMIZER)
    total, trainable = model_weights.counts
    if experiment.model.resize_vocab is not None:
        notes.append("model.resize_vocab: planned with the base vocabulary of config.json")
    peak, at_peak = tracker.peak, tracker.peak_by_role()
    if target == "cuda":
        at_peak[CUBLAS] = CUBLAS_THREADS * CUBLAS_WORKSPACE_BYTES
        peak += at_peak[CUBLAS]
    return StepMemory(
        peak=peak, at_peak=at_peak, weights=model_weights.by_dtype,
        parameters=total, trainable=trainable, gradients=gradients,
        optimizer_states=_unique_bytes(states), architecture_source=source,
        batch_shape=(rows, length), notes=notes)


def planned_optimizer(experiment, notes):
    """The optimizer config to run on fake tensors: torch's AdamW is planned as configured;
    the others (bitsandbytes' 8-bit and paged states, Adafactor, GaLore) are planned as
    AdamW, whose two fp32 moments per weight bound their states from above."""
    optim = experiment.optim
    if optim.type == "AdamW":
        return optim
    notes.append(f"optim.type={optim.type}: optimizer states planned as AdamW's (an upper "
                 "bound; 8-bit states are about a quarter, Adafactor's far less)")
    return dataclasses.replace(optim, type="AdamW", galore=None)


class StepRunner:
    """One micro-batch forward + backward, and optimizer steps, as the engines run them."""

    def __init__(self, model, loss, optimizer, experiment, tracker, target):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.train, self.optim = experiment.train, experiment.optim
        self.tracker, self.target = tracker, target

    def micro_batch(self, batch):
        self.tracker.phase = ACTIVATIONS
        precision = self.train.mixed_precision
        autocast = (torch.autocast("cpu", dtype=torch.bfloat16 if precision == "bf16"
                                   else torch.float16)  # fake tensors: CPU autocast
                    if precision != "no" else contextlib.nullcontext())
        with autocast:
            loss_sum, count = self.loss(self.model, batch)
        self.tracker.phase = BACKWARD
        (loss_sum / count).backward()

    def earlier_gradients(self):
        """The gradients an earlier micro-batch of the same step leaves (accumulation)."""
        self.tracker.phase = GRADIENTS
        for p in self.model.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)

    def warm_up(self):
        """An optimizer step on zero gradients: the optimizer states now exist, as after
        the run's first step (a fake forward costs as much as the planned one: skip it)."""
        self.earlier_gradients()
        self.optimizer_step()

    def gradient_bytes(self):
        return _unique_bytes([p.grad for p in self.model.parameters() if p.grad is not None])

    def optimizer_step(self):
        self.tracker.phase = OPTIMIZER_TEMP
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.optim.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.optim.max_grad_norm,
                                           foreach=self.target == "cuda")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def _rename(tracker, tensor, role):
    block = tracker.block(tensor)
    if block is not None:
        block.role = role


def _unique_bytes(tensors):
    storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


# ---------------------------------------------------------------- the model, fake


def _meta_model(config, model_cfg, dtype):
    """The model of `config` on the meta device (call under torch.device('meta'))."""
    from transformers import AutoModelForCausalLM

    config.use_cache = False
    try:
        return AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=model_cfg.attn_implementation,
            trust_remote_code=model_cfg.trust_remote_code)
    except (ValueError, ImportError) as e:
        raise ConfigError(f"cannot build '{model_cfg.path}' from its config: {e}") from None


def _make_fake(model, fake):
    """Meta parameters, buffers and 4-bit states → fake tensors, ties kept.

    Done once the model is complete: torch cannot swap a fake parameter in
    place, which peft's device moves would try."""
    twins = {}  # a tied weight is one Parameter in two modules: keep it one

    def twin(t):
        if id(t) not in twins:
            with fake:
                twins[id(t)] = torch.empty(t.shape, dtype=t.dtype)
        return twins[id(t)]

    for module in model.modules():
        for name, p in module._parameters.items():
            if p is None or id(p) in twins:
                module._parameters[name] = twins.get(id(p), p) if p is not None else None
                continue
            state = getattr(p, "quant_state", None)
            if state is not None:
                new = _fake_params4bit(p, state, twin)
            else:
                new = nn.Parameter(twin(p), requires_grad=p.requires_grad)
            twins[id(p)] = module._parameters[name] = new
        for name, b in module._buffers.items():
            if b is not None:
                module._buffers[name] = twin(b)


def _fake_params4bit(p, state, twin):
    """A fake stand-in for a bitsandbytes Params4bit: torch cannot re-wrap a fake tensor
    as a Params4bit, so a plain Parameter carries the attributes its layer reads."""
    import copy

    state = copy.copy(state)
    if state.state2 is not None:
        state.state2 = copy.copy(state.state2)
    for owner in (state, state.state2):
        for attr in ("absmax", "code", "offset"):
            value = getattr(owner, attr, None)
            if isinstance(value, torch.Tensor):
                setattr(owner, attr, twin(value))
    new = nn.Parameter(twin(p), requires_grad=False)
    for attr in ("blocksize", "compress_statistics", "quant_type", "quant_storage",
                 "bnb_quantized"):
        setattr(new, attr, getattr(p, attr))
    new.quant_state = state
    return new


def _apply_method(model, experiment, target):
    from xft.model.methods import apply_method

    quant = experiment.model.quantization
    if quant is not None:
        if quant.bits != 4:
            raise ConfigError("xft plan models 4-bit quantization only; model.quantization."
                              "bits=8 is not planned yet")
        from xft.model.quant import compute_dtype

        compute = compute_dtype(quant, experiment.model.dtype)
        if experiment.model.dtype == "auto":  # 'auto' follows the target, not this machine
            compute = weights_dtype(experiment.model, target)
        quantize_linear_layers(model, quant, compute)
    return apply_method(model, experiment.method, experiment.model.gradient_checkpointing)


def quantize_linear_layers(model, quant, compute_dtype):
    """Every nn.Linear but the output head → bitsandbytes Linear4bit, quantized (on meta).

    This is what from_pretrained does with a BitsAndBytesConfig (transformers keeps
    the head unquantized), done here because from_pretrained needs real weights.
    bitsandbytes registers fake kernels for its quantize/dequantize ops, so its
    own layers and autograd functions run on meta and fake tensors.
    """
    import bitsandbytes as bnb

    head = model.get_output_embeddings()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or child is head:
                continue
            layer = bnb.nn.Linear4bit(child.in_features, child.out_features,
                                      bias=child.bias is not None, compute_dtype=compute_dtype,
                                      compress_statistics=quant.double_quant,
                                      quant_type=quant.quant_type)
            packed, state = bnb.functional.quantize_4bit(
                child.weight.to(compute_dtype), compress_statistics=quant.double_quant,
                quant_type=quant.quant_type)
            layer.weight = bnb.nn.Params4bit(
                packed, requires_grad=False, quant_state=state, blocksize=state.blocksize,
                compress_statistics=quant.double_quant, quant_type=quant.quant_type,
                module=layer, bnb_quantized=True)
            if child.bias is not None:
                layer.bias = nn.Parameter(child.bias.to(compute_dtype), requires_grad=False)
            setattr(parent, name, layer)
    # The flags from_pretrained sets on a 4-bit model; xft.model.methods and peft read them.
    model.is_quantized = model.is_loaded_in_4bit = True


@contextlib.contextmanager
def _quiet_bitsandbytes_setup(model_cfg):
    """Make bitsandbytes usable on fake tensors (only when the config quantizes).

    Its blockwise quantizer builds its code table from Python values on first
    use, which fake tensors cannot do: build it for real first, as its first
    real call would, and cache it where bitsandbytes keeps it.
    """
    if model_cfg.quantization is not None:
        from xft.model.quant import import_bitsandbytes

        bnb = import_bitsandbytes(required=True)
        tables = bnb.functional.name2qmap
        if "dynamic" not in tables:
            tables["dynamic"] = bnb.functional.create_dynamic_map()
    yield


@dataclass
class ModelWeights:
    by_dtype: dict
    counts: tuple  # (logical parameters, trainable)


def _register_weights(model, tracker):
    """Count the model's parameters, buffers and 4-bit states as weights; split by dtype."""
    by_dtype, seen = {}, set()
    total = trainable = 0

    def add(t, label):
        key = t.untyped_storage()._cdata
        if key in seen:
            return
        seen.add(key)
        tracker.add(t, WEIGHTS)
        nbytes = t.untyped_storage().nbytes()
        by_dtype[label] = by_dtype.get(label, 0) + nbytes

    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        if state is not None:
            add(p, "4-bit packed")
            for t in _quant_state_tensors(state):
                add(t, "4-bit scales")
            total += state.shape.numel()
            continue
        label = str(p.dtype).replace("torch.", "") + (" (trainable)" if p.requires_grad else "")
        if p.untyped_storage()._cdata not in seen:
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        add(p, label)
    for b in model.buffers():
        add(b, "buffers")
    return ModelWeights(by_dtype, (total, trainable))


def _quant_state_tensors(state):
    tensors = [state.absmax, state.code, state.offset]
    if state.state2 is not None:
        tensors += [state.state2.absmax, state.state2.code]
    return [t for t in tensors if isinstance(t, torch.Tensor)]


# ---------------------------------------------------------------- the planned batch


def _batch(experiment, rows, length, config):
    """A micro-batch as the collator makes it: every position real and labelled (the
    worst case: no padding, the head at every position)."""
    vocab = config.get_text_config().vocab_size
    ids = torch.arange(rows * length).remainder(vocab).view(rows, length)
    batch = {"input_ids": ids}
    if experiment.data.pack:
        # Two samples per row, so the packed (block-diagonal) attention path is taken.
        half = max(1, length // 2)
        batch["position_ids"] = torch.cat([torch.arange(half), torch.arange(length - half)]
                                          ).repeat(rows, 1)
    else:
        batch["attention_mask"] = torch.ones(rows, length, dtype=torch.long)
    batch["labels"] = ids.clone()
    return batch


class FusedDropout(nn.Module):
    """Dropout as CUDA runs it, for a GPU plan on the CPU's fake tensors.

    On CUDA, dropout is the fused native_dropout, which keeps a 1-byte bool mask
    for backward; on the CPU it multiplies by a noise tensor of the input's
    dtype and keeps that (4 bytes in fp32). LoRA's dropout runs on every adapted
    layer's input (PEFT casts it to fp32 first), so the difference is gigabytes
    on a 1B model. native_dropout exists on the CPU too.
    """

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training:
            return x
        return torch.ops.aten.native_dropout(x, self.p, True)[0]


def use_fused_dropout(model):
    """Swap the model's nn.Dropout modules (p > 0) for FusedDropout (this fake copy only)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and 0 < child.p < 1:
                setattr(parent, name, FusedDropout(child.p))


class RealShadows(TorchDispatchMode):
    """Real twins of small tensors computed from the planned batch (see the module doc)."""

    def __init__(self, fake_mode):
        super().__init__()
        self.fake_mode = fake_mode
        self.real = WeakIdKeyDictionary()

    def fake_of(self, real):
        fake = self.fake_mode.from_tensor(real)
        self.real[fake] = real
        return fake

    def fake_batch(self, batch):
        return {k: self.fake_of(v) for k, v in batch.items()}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if func is torch.ops.aten._local_scalar_dense.default:
            if not self._known(tensors[0]):
                raise RuntimeError("xft plan: a value of the model's own tensors was read "
                                   "during the step (data-dependent control flow)")
            with unset_fake_temporarily():
                return self._real(tensors[0]).item()
        if not all(self._known(t) for t in tensors):
            return func(*self._bool_indices_as_longs(func, args), **kwargs)
        try:
            out = func(*args, **kwargs)
        except (DynamicOutputShapeException, DataDependentOutputException):
            out = None  # the output's shape depends on values: take it from the real one
        if out is not None and any(isinstance(f, torch.Tensor) and f.numel() > SHADOW_MAX_ELEMENTS
                                   for f in tree_leaves(out)):
            return out  # too large to compute for real; stays fake only
        with unset_fake_temporarily():
            real_out = func(*tree_map(self._real, args), **tree_map(self._real, kwargs))
        if out is None:
            return tree_map(lambda r: self.fake_of(r) if isinstance(r, torch.Tensor) else r,
                            real_out)
        for f, r in zip(tree_leaves(out), tree_leaves(real_out)):
            if isinstance(f, torch.Tensor):
                self.real[f] = r
        return out

    def _known(self, t):
        """Whether t's values are known: a real tensor (a constant), or a fake with a twin."""
        return not isinstance(t, FakeTensor) or t in self.real

    def _real(self, x):
        return self.real[x] if isinstance(x, FakeTensor) else x

    def _bool_indices_as_longs(self, func, args):
        """hidden[mask] with a shadowed boolean mask: index with the mask's real nonzero()
        positions instead (same result), which fake tensors can shape."""
        if func is not torch.ops.aten.index.Tensor:
            return args
        indices = []
        for index in args[1]:
            if (isinstance(index, torch.Tensor) and index.dtype == torch.bool
                    and self._known(index)):
                with unset_fake_temporarily():
                    positions = self.real[index].nonzero().unbind(1)
                indices.extend(self.fake_of(p) for p in positions)
            else:
                indices.append(index)
        return (args[0], indices, *args[2:])
