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
"""

import math
import random
from pathlib import Path

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import _ParamScheduler
from mmengine.registry import HOOKS, PARAM_SCHEDULERS

from xft.data.sampler import RunBatchSampler
from xft.engine.chat_eval import ChatEvaluator
from xft.engine.export import HF_DIR_NAME, export_hf
from xft.engine.monitor import TrainingMonitor, input_tokens
from xft.engine.safe_load import allow_checkpoint_globals
from xft.engine.schedule import lr_factor
from xft.engine.step_loss import loss_scale, window_label_tokens
from xft.engine.windows import window_loader
from xft.errors import XftError
from xft.model.loss import CausalLMLoss, training_loss
from xft.model.optimizer import build_optimizer


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

    def forward(self, batch, mode="loss"):
        """(token-loss sum, label tokens) of one micro-batch; its other keys go to the LM."""
        if mode != "loss":
            raise ValueError(f"CausalLMModel supports mode='loss' only, got {mode!r}")
        return self.loss(self.lm, batch)

    def train_step(self, data, optim_wrapper):
        window = self.data_preprocessor(data, True)  # moves every micro-batch to the device
        label_tokens = window_label_tokens([batch["labels"] for batch in window])
        scale = loss_scale(label_tokens)
        step_loss, tokens = 0.0, 0
        for batch in window:
            with optim_wrapper.optim_context(self):
                loss_sum, _ = self(batch)
            optim_wrapper.backward(loss_sum * scale)
            step_loss += float(loss_sum.detach() * scale)
            tokens += input_tokens(batch)
        optim_wrapper.step()  # clips and records train/grad_norm in the message hub
        optim_wrapper.zero_grad()
        return {"loss": torch.tensor(step_loss), "tokens": torch.tensor(float(tokens)),
                "label_tokens": label_tokens.float()}


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


@HOOKS.register_module(name="XftExportHook")
class ExportHook(Hook):
    """At the end of training, save the Hugging Face artifact into work_dir/hf."""

    priority = "LOWEST"

    def __init__(self, tokenizer, template, config_text):
        self.tokenizer, self.template, self.config_text = tokenizer, template, config_text

    def after_train(self, runner):
        out = export_hf(_lm(runner), self.tokenizer, self.template,
                        Path(runner.work_dir) / HF_DIR_NAME, self.config_text)
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
            "numpy": np.random.get_state(),
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


def _lm(runner):
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    return model.lm


def resolve_resume(resume, work_dir):
    """None, or the iter_N.pth to resume from; an error when there is none."""
    from mmengine.runner import find_latest_checkpoint

    if resume is None:
        return None
    if resume is True:
        checkpoint = find_latest_checkpoint(str(work_dir))  # what work_dir/last_checkpoint names
        if checkpoint is None:
            raise XftError(f"--resume: no checkpoint recorded in {work_dir}/last_checkpoint")
        return checkpoint
    if not Path(resume).is_file():
        raise XftError(f"--resume: checkpoint file {resume} does not exist")
    return str(resume)


def run_mmengine(built, resume=None):
    """Train with MMEngine's Runner. `built` is an xft.engine.builder.BuiltExperiment.

    `resume`: None (fresh run), True (newest checkpoint in the work dir) or a checkpoint path.
    """
    from mmengine.runner import Runner

    exp, plan = built.experiment, built.plan
    checkpoint = resolve_resume(resume, built.work_dir)
    train = exp.train
    batches = RunBatchSampler(len(built.dataset), train.batch_size, plan.total_micro_batches,
                              shuffle=exp.data.shuffle, seed=exp.seed)
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
        type="OptimWrapper", optimizer=dict(type=make_optimizer),
        # An infinite max_norm clips nothing but still records the gradient norm.
        clip_grad=dict(max_norm=max_norm))
    scheduler = dict(type="XftStepLR", by_epoch=False, total_steps=plan.total_steps,
                     warmup_steps=plan.warmup_steps, kind=train.lr_scheduler)
    default_hooks = dict(
        timer=dict(type="IterTimerHook"),
        logger=None,  # xft's MonitorHook prints the progress line, as on every engine
        param_scheduler=dict(type="ParamSchedulerHook"),
        checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=train.save_interval,
                        max_keep_ckpts=train.save_total_limit, save_last=True),
        sampler_seed=None)  # RunBatchSampler orders every epoch itself
    monitor = TrainingMonitor(built.work_dir, plan.total_steps, train.log_interval)
    chat = ChatEvaluator(exp.evaluation, built.tokenizer, built.template, exp.system,
                         built.work_dir)
    runner = Runner(
        model=CausalLMModel(built.model, training_loss(train)),
        work_dir=str(built.work_dir),
        train_dataloader=dataloader,
        train_cfg=dict(by_epoch=False, max_iters=plan.total_steps),
        optim_wrapper=optim_wrapper,
        param_scheduler=[scheduler],
        default_hooks=default_hooks,
        custom_hooks=[MonitorHook(monitor, chat),
                      ExportHook(built.tokenizer, built.template, built.config_text),
                      RngStateHook()],
        randomness=dict(seed=exp.seed),
        resume=checkpoint is not None,
        load_from=checkpoint,
        default_scope="mmengine",
        env_cfg=dict(dist_cfg=dict(backend="gloo" if not torch.cuda.is_available() else "nccl")),
    )
    with allow_checkpoint_globals():  # resume loads with weights_only=True
        runner.train()
    return Path(built.work_dir) / HF_DIR_NAME
