"""DeepSpeed ZeRO on MMEngine's Runner, without MMEngine's DeepSpeedStrategy.

mmengine 0.10.7's DeepSpeedStrategy (FlexibleRunner) imports
`deepspeed.runtime.fp16.onebit`, which DeepSpeed removed in 0.19.7, and its
model wrapper's train_step would bypass xft's accumulation window anyway. So
xft keeps the ordinary Runner and gives it, through MMEngine's registries:

- `DeepSpeedObjectiveModel`: a model wrapper around the engine that
  `deepspeed.initialize` builds from ObjectiveModel and xft's optimizer; its
  train_step runs ObjectiveModel.train_window with the engine's forward.
- `DeepSpeedOptimWrapper`: an OptimWrapper (Runner accepts no other kind)
  whose backward/step go to the engine. The loss xft hands it is already normalised over the whole optimizer
  step, so `backward` does not divide by the accumulation steps again;
  DeepSpeed counts micro-batches itself and, at the window's last one,
  reduces gradients, clips and updates.
"""

import contextlib
import math

from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper
from mmengine.registry import MODEL_WRAPPERS, OPTIM_WRAPPERS
from torch import nn


@MODEL_WRAPPERS.register_module(name="XftDeepSpeedObjectiveModel")
class DeepSpeedObjectiveModel(nn.Module):
    def __init__(self, engine):
        super().__init__()
        self.engine = engine

    @property
    def module(self):
        """The ObjectiveModel, where Runner and xft's hooks look for the language model."""
        return self.engine.module

    def train_step(self, data, optim_wrapper):
        return self.module.train_window(data, optim_wrapper, forward=self.engine)


@OPTIM_WRAPPERS.register_module(name="XftDeepSpeedOptimWrapper")
class DeepSpeedOptimWrapper(OptimWrapper):
    """`optimizer` is xft's torch optimizer that DeepSpeed wraps: ZeRO keeps its parameter
    groups (now over ZeRO's partitions), so MMEngine's lr scheduler sets the lr the
    update uses there."""

    def __init__(self, optimizer, engine):
        super().__init__(optimizer)  # no clip_grad: DeepSpeed clips (gradient_clipping)
        self.engine = engine

    def backward(self, loss, **kwargs):
        self.engine.backward(loss, scale_wrt_gas=False)
        self.engine.step()  # an update only at the accumulation boundary

    def step(self, **kwargs):
        """The update happened in the last backward; record its gradient norm (pre-clip)
        where MMEngine's OptimWrapper records it."""
        norm = self.engine.get_global_grad_norm()
        MessageHub.get_current_instance().update_scalar(
            "train/grad_norm", math.nan if norm is None else float(norm))

    def zero_grad(self, **kwargs):
        """DeepSpeed clears the gradients itself after each update."""

    @contextlib.contextmanager
    def optim_context(self, model):
        """No autocast or no_sync here: DeepSpeed handles precision and gradient reduction."""
        yield


def deepspeed_model_and_optim_wrapper(model, optimizer, ds_config):
    """(model wrapper, optim wrapper config) for Runner, from ObjectiveModel and xft's
    optimizer. The optim wrapper is given as a config so that Runner builds it when
    training starts, under Runner's own MessageHub."""
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    return DeepSpeedObjectiveModel(engine), dict(type="XftDeepSpeedOptimWrapper",
                                           optimizer=optimizer, engine=engine)
