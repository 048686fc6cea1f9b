"""xft's pieces for MMEngine's Runner: the model adapter, its DDP wrapper, the lr
schedule and the autocast optimizer wrapper (registered in MMEngine's registries).

`ObjectiveModel` wraps the Hugging Face model and the run's objective
(xft.objectives) in an MMEngine BaseModel. One Runner iteration is one
optimizer step: the loader yields a whole accumulation window
(xft.engine.windows) and `ObjectiveModel.train_step` runs its micro-batches,
normalising by the objective's count of the whole window (xft.engine.step_loss)
before stepping the optimizer once. So checkpoint names, intervals and resume
positions all count optimizer steps.

Under torchrun (xft.engine.launch) the model is wrapped in
`DistributedObjectiveModel`, a DDP wrapper whose train_step runs the same window
through DDP, synchronising gradients only on the window's last micro-batch.
"""

import contextlib
from contextlib import contextmanager

import torch
from mmengine.logging import MessageHub
from mmengine.model import BaseModel, MMDistributedDataParallel
from mmengine.optim import OptimWrapper
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import _ParamScheduler
from mmengine.registry import MODEL_WRAPPERS, OPTIM_WRAPPERS, PARAM_SCHEDULERS

from xft.engine.distributed import rank
from xft.engine.step_loss import StepMetrics, loss_scale, mean_over_ranks, window_count
from xft.errors import XftError


class ObjectiveModel(BaseModel):
    """MMEngine view of a Hugging Face model trained by an objective (xft.objectives);
    one train_step is one optimizer step."""

    def __init__(self, lm, objective):
        super().__init__(data_preprocessor=dict(type="BaseDataPreprocessor"))
        self.lm, self.objective = lm, objective

    def init_weights(self):
        """Keep the weights as built. Runner calls this before training, and BaseModule's
        default would call the LM's own init_weights, re-drawing every weight not flagged
        as loaded, such as PEFT's LoRA A and B (B must start at zero). It would also fail
        on 4/8-bit quantized weights."""

    def state_dict(self, *args, **kwargs):
        """The trained weights only; what MMEngine's Runner stores in each checkpoint.

        The frozen rest (a LoRA run's base model, quantized or not) is rebuilt from
        model.path, as in XTuner: a 7B LoRA checkpoint then holds megabytes rather
        than 14 GB, and saving one copies no frozen weight into CPU memory.
        `with_frozen_weights` completes such a state for loading.
        """
        state = super().state_dict(*args, **kwargs)
        trained = {name for name, p in self.named_parameters(remove_duplicate=False)
                   if p.requires_grad}
        kept = type(state)((key, value) for key, value in state.items() if key in trained)
        kept._metadata = getattr(state, "_metadata", None)
        return kept

    def with_frozen_weights(self, state, source):
        """`state` (trained weights, as saved by `state_dict`) completed with this model's
        own frozen parameters and buffers (the live tensors, no copies), so that loading
        it finds every key; an error naming `source` if a trained weight is missing."""
        missing = sorted(set(self.state_dict()) - set(state))
        if missing:
            raise XftError(f"checkpoint {source} lacks {len(missing)} trained weight(s) of "
                           f"this model, e.g. {missing[:3]}: it was written for another "
                           "model or method")
        saved_keys = set(BaseModel.state_dict(self))  # parameters and persistent buffers
        tensors = dict(self.named_parameters(remove_duplicate=False))
        tensors.update(self.named_buffers(remove_duplicate=False))
        for key, tensor in tensors.items():
            if key in saved_keys and key not in state:
                state[key] = tensor.detach()
        return state

    def forward(self, batch, mode="loss"):
        """The objective's (loss sum, count, metrics) of one micro-batch, as a tuple (which
        data-parallel wrappers pass through)."""
        if mode != "loss":
            raise ValueError(f"ObjectiveModel supports mode='loss' only, got {mode!r}")
        out = self.objective.loss(self.lm, batch)
        return out.sum, out.count, out.metrics

    def train_step(self, data, optim_wrapper):
        return self.train_window(data, optim_wrapper, forward=self)

    def train_window(self, data, optim_wrapper, forward, no_sync=None):
        """One optimizer step over an accumulation window of micro-batches.

        `forward` runs a micro-batch (this model, or the data-parallel wrapper
        around it, so that the wrapper sees the forward); `no_sync`, if given, is
        the wrapper's context that skips the gradient all-reduce, used for every
        micro-batch but the last. The step's normaliser (the objective's counts of
        the whole window, all ranks) is known before the first backward.
        """
        window = self.data_preprocessor(data, True)  # moves every micro-batch to the device
        # RL objectives generate here, with the weights of this step (RuntimeInfoHook keeps
        # the message hub's 'iter' at the number of steps done).
        step = MessageHub.get_current_instance().get_info("iter", 0)
        window = self.objective.rollouts(self.lm, window, step, rank())
        counts = [self.objective.count(batch) for batch in window]
        scale = loss_scale(window_count(counts))
        metrics = StepMetrics()
        step_loss, tokens = torch.zeros((), device=scale.device), 0
        for i, batch in enumerate(window):
            last = i == len(window) - 1
            with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
                with optim_wrapper.optim_context(self):
                    loss_sum, _, batch_metrics = forward(batch)
                optim_wrapper.backward(loss_sum * scale)
            step_loss += loss_sum.detach().float() * scale
            metrics.add(batch_metrics, scale)
            tokens += self.objective.batch_tokens(batch)
        optim_wrapper.step()  # clips and records train/grad_norm in the message hub
        optim_wrapper.zero_grad()
        # Runner records every output in its message hub, which takes scalars only: the
        # objective's metrics are outputs of their own (named by Objective.metric_names).
        return {"loss": mean_over_ranks(step_loss).cpu(), "tokens": torch.tensor(float(tokens)),
                "count": torch.tensor(float(sum(int(c) for c in counts))),  # this rank's
                **{name: torch.tensor(value) for name, value in metrics.take().items()}}


@MODEL_WRAPPERS.register_module(name="XftDistributedDataParallel")
class DistributedObjectiveModel(MMDistributedDataParallel):
    """DDP around ObjectiveModel whose train_step runs the model's accumulation window.

    MMDistributedDataParallel's own train_step would do one forward/backward and
    step; this one hands the window to ObjectiveModel.train_window with DDP's forward
    (so gradients are all-reduced) and DDP's no_sync (so only once per step).
    """

    def train_step(self, data, optim_wrapper):
        return self.module.train_window(data, optim_wrapper, forward=self, no_sync=self.no_sync)


@PARAM_SCHEDULERS.register_module(name="XftStepLR")
class StepLR(LRSchedulerMixin, _ParamScheduler):
    """xft's lr schedule (xft.engine.schedule.lr_lambda: a multiplier per optimizer step);
    MMEngine steps it once per optimizer step."""

    def __init__(self, optimizer, factor, **kwargs):
        self.factor = factor
        kwargs.pop("epoch_length", None)  # passed by Runner to every scheduler; unused here
        super().__init__(optimizer, **kwargs)

    def state_dict(self):
        """The scheduler's state without the curve (a function: checkpoints hold plain
        values only, xft.engine.safe_load); the run rebuilds it from its config."""
        state = super().state_dict()
        del state["factor"]
        return state

    def _get_value(self):
        factor = self.factor(self.last_step)
        return [base * factor for base in self.base_values]


@OPTIM_WRAPPERS.register_module(name="XftAutocastOptimWrapper")
class AutocastOptimWrapper(OptimWrapper):
    """An OptimWrapper that runs the forward under torch.autocast on the model's device
    (bf16 mixed precision; unlike AmpOptimWrapper it needs no GPU and no loss scaler)."""

    def __init__(self, dtype, **kwargs):
        super().__init__(**kwargs)
        self.dtype = dtype

    @contextmanager
    def optim_context(self, model):
        device_type = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(device_type, dtype=self.dtype):
            yield


def optim_wrapper_type(mixed_precision):
    """The OptimWrapper type and options for train.mixed_precision (xft.engine.precision)."""
    if mixed_precision == "bf16":
        return dict(type="XftAutocastOptimWrapper", dtype=torch.bfloat16)
    if mixed_precision == "fp16":  # GradScaler with dynamic loss scale; CUDA only
        return dict(type="AmpOptimWrapper", dtype="float16", loss_scale="dynamic")
    return dict(type="OptimWrapper")
