"""Run an experiment on MMEngine's Runner.

xft builds the model, dataset and collator; this adapter wraps the model in an
MMEngine BaseModel and hands Runner a loader, an OptimWrapper spec and xft's lr
schedule, plus hooks for metrics, evaluation chat and the final Hugging Face
artifact.

One Runner iteration is one optimizer step: the loader yields a whole
accumulation window (xft.engine.windows) and `CausalLMModel.train_step` runs
its micro-batches, normalising by the window's label tokens
(xft.engine.step_loss) before stepping the optimizer once. So checkpoint
names, intervals and resume positions all count optimizer steps.

Under torchrun (xft.engine.launch) xft joins the process group itself
(xft.engine.distributed) and wraps the model in `DistributedCausalLM`, a DDP
wrapper whose train_step runs the same window through DDP, synchronising
gradients only on the window's last micro-batch. With DeepSpeed the model and
optimizer go through deepspeed.initialize instead (xft.engine.mmengine_deepspeed).
"""

import contextlib
import math
import os
import random
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel, MMDistributedDataParallel
from mmengine.optim import OptimWrapper
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import _ParamScheduler
from mmengine.registry import HOOKS, MODEL_WRAPPERS, OPTIM_WRAPPERS, PARAM_SCHEDULERS

from xft.data.sampler import RunBatchSampler
from xft.engine import distributed
from xft.engine.chat_eval import ChatEvaluator
from xft.engine.checkpoint_files import (TMP_SUFFIX, atomic_write_text, complete_torch_file,
                                         newest_complete, numbered_checkpoints,
                                         pick_resume, remove_old)
from xft.engine.export import HF_DIR_NAME
from xft.engine.monitor import TrainingMonitor, input_tokens
from xft.engine.safe_load import (load_weights_only, plain_checkpoint, plain_numpy_rng,
                                  restore_message_hub)
from xft.engine.schedule import lr_factor
from xft.engine.step_loss import loss_scale, window_label_tokens
from xft.engine.validation import Validator, export_final
from xft.engine.windows import window_loader
from xft.errors import XftError
from xft.model.loss import CausalLMLoss, count_label_tokens, training_loss
from xft.model.optimizer import build_optimizer
from xft.outputs import save_torch

CHECKPOINT_FILE = re.compile(r"^iter_(\d+)\.pth$")
LAST_CHECKPOINT_FILE = "last_checkpoint"  # MMEngine's pointer to the newest checkpoint


class CausalLMModel(BaseModel):
    """MMEngine view of a Hugging Face causal LM; one train_step is one optimizer step."""

    def __init__(self, lm, loss=None):
        super().__init__(data_preprocessor=dict(type="BaseDataPreprocessor"))
        self.lm, self.loss = lm, loss or CausalLMLoss()

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
        """(token-loss sum, label tokens) of one micro-batch; its other keys go to the LM."""
        if mode != "loss":
            raise ValueError(f"CausalLMModel supports mode='loss' only, got {mode!r}")
        return self.loss(self.lm, batch)

    def train_step(self, data, optim_wrapper):
        return self.train_window(data, optim_wrapper, forward=self)

    def train_window(self, data, optim_wrapper, forward, no_sync=None):
        """One optimizer step over an accumulation window of micro-batches.

        `forward` runs a micro-batch (this model, or the data-parallel wrapper
        around it, so that the wrapper sees the forward); `no_sync`, if given, is
        the wrapper's context that skips the gradient all-reduce, used for every
        micro-batch but the last.
        """
        window = self.data_preprocessor(data, True)  # moves every micro-batch to the device
        label_tokens = window_label_tokens([batch["labels"] for batch in window])
        scale = loss_scale(label_tokens)
        step_loss, tokens, local_label_tokens = torch.zeros((), device=label_tokens.device), 0, 0
        for i, batch in enumerate(window):
            last = i == len(window) - 1
            with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
                with optim_wrapper.optim_context(self):
                    loss_sum, _ = forward(batch)
                optim_wrapper.backward(loss_sum * scale)
            step_loss += loss_sum.detach().float() * scale
            tokens += input_tokens(batch)
            local_label_tokens += int(count_label_tokens(batch["labels"]))
        optim_wrapper.step()  # clips and records train/grad_norm in the message hub
        optim_wrapper.zero_grad()
        return {"loss": _mean_over_ranks(step_loss).cpu(), "tokens": torch.tensor(float(tokens)),
                "label_tokens": torch.tensor(float(local_label_tokens))}  # this rank's


def _mean_over_ranks(step_loss):
    """Each rank's share is scaled by the world size (xft.engine.step_loss): their mean is
    the step's loss."""
    import torch.distributed as dist

    if distributed.is_distributed() and dist.is_initialized():
        dist.all_reduce(step_loss)
        step_loss = step_loss / dist.get_world_size()
    return step_loss


@MODEL_WRAPPERS.register_module(name="XftDistributedDataParallel")
class DistributedCausalLM(MMDistributedDataParallel):
    """DDP around CausalLMModel whose train_step runs the model's accumulation window.

    MMDistributedDataParallel's own train_step would do one forward/backward and
    step; this one hands the window to CausalLMModel.train_window with DDP's forward
    (so gradients are all-reduced) and DDP's no_sync (so only once per step).
    """

    def train_step(self, data, optim_wrapper):
        return self.module.train_window(data, optim_wrapper, forward=self, no_sync=self.no_sync)


@PARAM_SCHEDULERS.register_module(name="XftStepLR")
class StepLR(LRSchedulerMixin, _ParamScheduler):
    """xft's lr schedule (xft.engine.schedule); MMEngine steps it once per optimizer step."""

    def __init__(self, optimizer, total_steps, warmup_steps, kind, **kwargs):
        self.total_steps, self.warmup_steps, self.kind = total_steps, warmup_steps, kind
        kwargs.pop("epoch_length", None)  # passed by Runner to every scheduler; unused here
        super().__init__(optimizer, **kwargs)

    def _get_value(self):
        factor = lr_factor(self.last_step, self.total_steps, self.warmup_steps, self.kind)
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


@HOOKS.register_module(name="XftMonitorHook")
class MonitorHook(Hook):
    """Feeds xft's TrainingMonitor and ChatEvaluator (identical for both engines)."""

    # Before ParamSchedulerHook (LOW): the lr read here is the one this step used.
    priority = "BELOW_NORMAL"

    def __init__(self, monitor, chat):
        self.monitor, self.chat = monitor, chat

    def before_train(self, runner):
        self.monitor.start(runner.iter)
        self.chat.run(_lm(runner), runner.iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        step = runner.iter + 1
        self.monitor.count_tokens(outputs["tokens"], outputs["label_tokens"])
        grad_norm = runner.message_hub.get_scalar("train/grad_norm").current()
        self.monitor.step_end(step, outputs["loss"], runner.optim_wrapper.get_lr()["lr"][0],
                              grad_norm)
        if self.chat.due(step) and step != self.monitor.total_steps:
            self.chat.run(_lm(runner), step)

    def after_train(self, runner):
        self.chat.run(_lm(runner), runner.iter)
        self.monitor.finish()


@HOOKS.register_module(name="XftValidationHook")
class ValidationHook(Hook):
    """Runs xft's Validator (eval loss, best weights, early stopping) after each step."""

    # Same priority as MonitorHook and registered after it: the step is logged first.
    priority = "BELOW_NORMAL"

    def __init__(self, validator):
        self.validator = validator

    def before_train(self, runner):
        self.validator.start(runner.iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.validator.after_step(_lm(runner), runner.iter + 1):
            runner.train_loop.stop_training = True  # IterBasedTrainLoop checks it each iteration


@HOOKS.register_module(name="XftExportHook")
class ExportHook(Hook):
    """At the end of training, save the Hugging Face artifact into work_dir/hf."""

    priority = "LOWEST"

    def __init__(self, tokenizer, template, config_text, validator=None):
        self.tokenizer, self.template, self.config_text = tokenizer, template, config_text
        self.validator = validator

    def after_train(self, runner):
        out = export_final(_lm(runner), self.tokenizer, self.template,
                           Path(runner.work_dir) / HF_DIR_NAME, self.config_text, self.validator)
        runner.logger.info(f"Hugging Face artifact written to {out}")


@HOOKS.register_module(name="XftRngStateHook")
class RngStateHook(Hook):
    """Store the random generators in each checkpoint and restore them on resume.

    MMEngine checkpoints hold no RNG state, so a resumed run would draw other
    dropout masks than the uninterrupted run and end with other weights.
    """

    KEY = "xft_rng_state"

    def before_save_checkpoint(self, runner, checkpoint):
        checkpoint[self.KEY] = {
            "python": random.getstate(),
            "numpy": plain_numpy_rng(np.random.get_state()),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def after_load_checkpoint(self, runner, checkpoint):
        state = checkpoint.get(self.KEY)
        if state is None:  # a checkpoint written before xft stored RNG state
            runner.logger.warning("checkpoint has no RNG state: dropout masks will differ")
            return
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


@HOOKS.register_module(name="XftCheckpointHook")
class CheckpointHook(Hook):
    """Save `iter_N.pth` every `interval` optimizer steps and at the end, atomically.

    MMEngine's CheckpointHook writes the file in place, deletes the oldest
    checkpoint before the new one is written and then rewrites `last_checkpoint`
    in place, so a kill can leave a truncated newest file, or no complete one at
    all. Here the checkpoint is written as `iter_N.pth.tmp`, flushed and renamed;
    only then is `last_checkpoint` replaced and are old checkpoints removed.

    The Runner still builds the checkpoint (weights, optimizer, schedulers, other
    hooks' additions); this hook writes it, streamed to the file, in
    `before_save_checkpoint`. MMEngine's own writer serialises the whole checkpoint
    into memory and copies that buffer once more before writing it: for full
    fine-tuning of a 1B model on a GPU (weights plus AdamW moments, 15 GB) that
    was 34 GB of peak RSS.
    """

    priority = "LOWEST"  # after the lr scheduler's step; last to see a checkpoint

    def __init__(self, interval, max_keep, resume_from=None):
        self.interval, self.max_keep, self.resume_from = interval, max_keep, resume_from
        self.writing = None  # the temporary file of the save in progress

    def after_load_checkpoint(self, runner, checkpoint):
        """Runs before MMEngine loads the checkpoint's weights into the model: add the
        frozen weights it does not hold (CausalLMModel.state_dict)."""
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        model.with_frozen_weights(checkpoint["state_dict"], self.resume_from)
        restore_message_hub(checkpoint["message_hub"])

    def before_train(self, runner):
        if not distributed.is_main_process():
            return
        for stale in Path(runner.work_dir).glob(f"iter_*.pth{TMP_SUFFIX}"):
            stale.unlink(missing_ok=True)  # a save cut off by a kill

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        step = runner.iter + 1
        if step % self.interval == 0 or step == runner.max_iters:
            self.save(runner, step)

    def before_save_checkpoint(self, runner, checkpoint):
        if self.writing is None:  # a save this hook did not start: MMEngine writes it
            return
        if distributed.is_main_process():
            # Plain tensors and containers only, so resume needs no allow-list (safe_load).
            save_torch(plain_checkpoint(checkpoint), self.writing)  # fsynced
        checkpoint.clear()  # what MMEngine then writes, to os.devnull, is empty

    def save(self, runner, step):
        work_dir = Path(runner.work_dir)
        final = work_dir / f"iter_{step}.pth"
        tmp = self.writing = final.with_name(final.name + TMP_SUFFIX)
        try:
            runner.save_checkpoint(os.path.dirname(os.devnull), os.path.basename(os.devnull),
                                   save_optimizer=True, save_param_scheduler=True,
                                   by_epoch=False)
        finally:
            self.writing = None
        if not distributed.is_main_process():
            return
        os.replace(tmp, final)
        atomic_write_text(work_dir / LAST_CHECKPOINT_FILE, str(final))
        remove_old(checkpoint_files(work_dir), step, self.max_keep, complete_torch_file,
                   remove=Path.unlink)


def _lm(runner):
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    return model.lm


def checkpoint_files(work_dir):
    """(N, path) of every iter_N.pth in the work dir, sorted by N, complete or not."""
    return numbered_checkpoints(work_dir, CHECKPOINT_FILE)


def newest_complete_checkpoint(work_dir, log=print):
    """The iter_N.pth with the highest N that is a whole file, or None.

    Files are judged by their content, not by `last_checkpoint`: a checkpoint
    written by a non-atomic writer may be named there and yet be cut off.
    """
    return newest_complete(checkpoint_files(work_dir), complete_torch_file, log)


def resolve_resume(resume, work_dir):
    """None, or the iter_N.pth to resume from; an error when there is none."""
    return pick_resume(resume, work_dir, checkpoint_files(work_dir), complete_torch_file,
                       "iter_N.pth checkpoint")


def run_mmengine(built, resume=None, deepspeed=None):
    """Train with MMEngine's Runner. `built` is an xft.engine.builder.BuiltExperiment.

    `resume`: None (fresh run), True (newest checkpoint in the work dir) or a checkpoint path.
    `deepspeed`: None or a resolved DeepSpeed config (xft.engine.deepspeed_config).
    """
    from mmengine.runner import Runner

    exp, plan = built.experiment, built.plan
    checkpoint = resolve_resume(resume, built.work_dir)
    if checkpoint is not None:
        # MMEngine loads it with torch's weights_only=True default; refusing a crafted or
        # old-format file first gives a one-line error naming it.
        load_weights_only(checkpoint, mmap=True)
    if deepspeed is not None and checkpoint is not None:
        raise XftError("--resume with --deepspeed is not supported on the mmengine backend "
                       "(use --backend hf)")
    train = exp.train
    if distributed.is_distributed():
        distributed.init_process_group()
    batches = RunBatchSampler(len(built.dataset), train.batch_size, plan.total_micro_batches,
                              shuffle=exp.data.shuffle, seed=exp.seed,
                              world_size=distributed.world_size(), rank=distributed.rank())
    # One pass over this loader is the whole run, so MMEngine never restarts it.
    dataloader = window_loader(built.dataset, built.collator, batches, train.grad_accum,
                               exp.data.num_workers)
    max_norm = exp.optim.max_grad_norm if exp.optim.max_grad_norm is not None else math.inf

    def make_optimizer(params):
        # Runner offers all parameters; xft's optimizer picks the trainable groups itself.
        return build_optimizer(built.model, exp.optim, exp.method)

    # Given as a config (not an instance) so Runner builds it with its own MessageHub,
    # where the gradient norm is recorded. Accumulation happens inside train_step.
    optim_wrapper = dict(
        **optim_wrapper_type(train.mixed_precision), optimizer=dict(type=make_optimizer),
        # An infinite max_norm clips nothing but still records the gradient norm.
        clip_grad=dict(max_norm=max_norm))
    scheduler = dict(type="XftStepLR", by_epoch=False, total_steps=plan.total_steps,
                     warmup_steps=plan.warmup_steps, kind=train.lr_scheduler)
    default_hooks = dict(
        timer=dict(type="IterTimerHook"),
        logger=None,  # xft's MonitorHook prints the progress line, as on every engine
        param_scheduler=dict(type="ParamSchedulerHook"),
        checkpoint=None,  # replaced by xft's atomic CheckpointHook (custom_hooks)
        sampler_seed=None)  # RunBatchSampler orders every epoch itself
    loss = training_loss(train)
    model = CausalLMModel(built.model, loss)
    # The process group exists already (see init_process_group), so the 'pytorch'
    # launcher only tells Runner to use it and wrap the model: DDP on CPU takes no device_ids.
    runner_cfg = dict(model_wrapper_cfg=dict(
        type="XftDistributedDataParallel",
        device_ids=[distributed.local_rank()] if torch.cuda.is_available() else None))
    if deepspeed is not None:
        from xft.engine.mmengine_deepspeed import deepspeed_model_and_optim_wrapper

        model, optim_wrapper = deepspeed_model_and_optim_wrapper(
            model, build_optimizer(built.model, exp.optim, exp.method), deepspeed)
        runner_cfg = None  # the model comes wrapped
        # MMEngine's checkpoint holds one state dict saved by rank 0: under ZeRO the
        # optimizer state (and, at stage 3, the weights) is spread over all ranks, so
        # no CheckpointHook below.
        if distributed.is_main_process():
            print("xft: warning: no intermediate checkpoints with --deepspeed on the mmengine "
                  "backend (the final artifact is exported); use --backend hf to resume")
    monitor = TrainingMonitor(built.work_dir, plan.total_steps, train.log_interval)
    chat = ChatEvaluator(exp.evaluation, built.tokenizer, built.template, exp.system,
                         built.work_dir)
    validator = Validator(built, monitor, chat, loss) if built.validation is not None else None
    hooks = [MonitorHook(monitor, chat)]
    if validator is not None:
        hooks.append(ValidationHook(validator))
    hooks += [ExportHook(built.tokenizer, built.template, built.config_text, validator),
              RngStateHook()]
    if deepspeed is None:
        hooks.append(CheckpointHook(train.save_interval, train.save_total_limit, checkpoint))
    runner = Runner(
        model=model,
        work_dir=str(built.work_dir),
        train_dataloader=dataloader,
        train_cfg=dict(by_epoch=False, max_iters=plan.total_steps),
        optim_wrapper=optim_wrapper,
        param_scheduler=[scheduler],
        default_hooks=default_hooks,
        custom_hooks=hooks,
        randomness=dict(seed=exp.seed),
        resume=checkpoint is not None,
        load_from=checkpoint,
        default_scope="mmengine",
        launcher="pytorch" if distributed.is_distributed() else "none",
        cfg=runner_cfg,
    )
    runner.train()
    return Path(built.work_dir) / HF_DIR_NAME
