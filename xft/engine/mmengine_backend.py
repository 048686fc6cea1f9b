"""Run an experiment on MMEngine's Runner.

xft builds the model, dataset and collator; this adapter wraps the model in an
MMEngine BaseModel (whose train_step computes xft's token-sum loss), hands
Runner a DataLoader, an OptimWrapper spec and xft's lr schedule, and adds hooks
that write metrics.jsonl and the final Hugging Face artifact.
"""

import json
import math
import time
from pathlib import Path

import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import _ParamScheduler
from mmengine.registry import HOOKS, PARAM_SCHEDULERS
from torch.utils.data import DataLoader

from xft.data.sampler import RunBatchSampler
from xft.engine.export import export_hf
from xft.engine.safe_load import allow_checkpoint_globals
from xft.engine.schedule import lr_factor
from xft.model.loss import causal_lm_logits, token_loss_sum
from xft.model.optimizer import build_optimizer

METRICS_FILE = "metrics.jsonl"
HF_DIR_NAME = "hf"


class CausalLMModel(BaseModel):
    """MMEngine view of a Hugging Face causal LM: forward(mode='loss') → {'loss': ...}."""

    def __init__(self, lm):
        super().__init__(data_preprocessor=dict(type="BaseDataPreprocessor"))
        self.lm = lm

    def forward(self, input_ids, labels, attention_mask=None, position_ids=None, mode="loss"):
        if mode != "loss":
            raise ValueError(f"CausalLMModel supports mode='loss' only, got {mode!r}")
        logits = causal_lm_logits(self.lm, input_ids, attention_mask, position_ids)
        loss_sum, count = token_loss_sum(logits, labels)
        # Packed rows have no attention mask: their slots (padding included) are counted.
        tokens = attention_mask.sum() if attention_mask is not None else input_ids.numel()
        # `loss` is what is optimised; the other entries are only logged.
        return {"loss": loss_sum / count.clamp(min=1),
                "label_tokens": count.float(),
                "tokens": torch.as_tensor(tokens).float()}


@PARAM_SCHEDULERS.register_module(name="XftStepLR")
class StepLR(LRSchedulerMixin, _ParamScheduler):
    """xft's lr schedule (xft.engine.schedule) counted in optimizer steps.

    MMEngine steps schedulers once per micro-batch; with gradient accumulation
    the optimizer step is micro-batch // grad_accum.
    """

    def __init__(self, optimizer, total_steps, warmup_steps, kind, grad_accum=1, **kwargs):
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.kind, self.grad_accum = kind, grad_accum
        kwargs.pop("epoch_length", None)  # passed by Runner to every scheduler; unused here
        super().__init__(optimizer, **kwargs)

    def _get_value(self):
        step = self.last_step // self.grad_accum
        factor = lr_factor(step, self.total_steps, self.warmup_steps, self.kind)
        return [base * factor for base in self.base_values]


@HOOKS.register_module(name="XftMetricsHook")
class MetricsHook(Hook):
    """Append one JSON line per logged optimizer step to work_dir/metrics.jsonl."""

    priority = "BELOW_NORMAL"

    def __init__(self, log_interval, grad_accum, total_steps):
        self.log_interval, self.grad_accum, self.total_steps = log_interval, grad_accum, total_steps

    def before_train(self, runner):
        self.path = Path(runner.work_dir) / METRICS_FILE
        self.start = time.time()
        self._reset()

    def _reset(self):
        self.loss_sum, self.steps, self.tokens, self.label_tokens = 0.0, 0, 0, 0
        self.step_loss, self.step_micro = 0.0, 0

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.step_loss += float(outputs["loss"].detach())
        self.step_micro += 1
        self.tokens += int(outputs["tokens"])
        self.label_tokens += int(outputs["label_tokens"])
        if (runner.iter + 1) % self.grad_accum:
            return
        self.loss_sum += self.step_loss / self.step_micro
        self.steps += 1
        self.step_loss, self.step_micro = 0.0, 0
        step = (runner.iter + 1) // self.grad_accum
        if step % self.log_interval and step != self.total_steps:
            return
        hub = runner.message_hub
        record = {
            "step": step,
            "loss": round(self.loss_sum / self.steps, 6),
            "lr": runner.optim_wrapper.get_lr()["lr"][0],
            "grad_norm": round(hub.get_scalar("train/grad_norm").current(), 6),
            "tokens": self.tokens,
            "label_tokens": self.label_tokens,
            "elapsed": round(time.time() - self.start, 3),
        }
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self._reset()


@HOOKS.register_module(name="XftExportHook")
class ExportHook(Hook):
    """At the end of training, save the Hugging Face artifact into work_dir/hf."""

    priority = "LOWEST"

    def __init__(self, tokenizer, template, config_text):
        self.tokenizer, self.template, self.config_text = tokenizer, template, config_text

    def after_train(self, runner):
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        out = export_hf(model.lm, self.tokenizer, self.template,
                        Path(runner.work_dir) / HF_DIR_NAME, self.config_text)
        runner.logger.info(f"Hugging Face artifact written to {out}")


def run_mmengine(built, resume=None):
    """Train with MMEngine's Runner. `built` is an xft.engine.builder.BuiltExperiment."""
    from mmengine.runner import Runner

    exp, plan = built.experiment, built.plan
    train = exp.train
    batches = RunBatchSampler(len(built.dataset), train.batch_size, plan.total_micro_batches,
                              shuffle=exp.data.shuffle, seed=exp.seed)
    # One pass over this loader is the whole run, so MMEngine never restarts it.
    dataloader = DataLoader(built.dataset, batch_sampler=batches, collate_fn=built.collator,
                            num_workers=exp.data.num_workers)
    max_norm = exp.optim.max_grad_norm if exp.optim.max_grad_norm is not None else math.inf
    def make_optimizer(params):
        # Runner offers all parameters; xft's optimizer picks the trainable groups itself.
        return build_optimizer(built.model, exp.optim)

    # Given as a config (not an instance) so Runner builds it with its own MessageHub,
    # where the gradient norm is recorded.
    optim_wrapper = dict(
        type="OptimWrapper", optimizer=dict(type=make_optimizer),
        # An infinite max_norm clips nothing but still records the gradient norm.
        clip_grad=dict(max_norm=max_norm),
        accumulative_counts=train.grad_accum)
    scheduler = dict(type="XftStepLR", by_epoch=False, total_steps=plan.total_steps,
                     warmup_steps=plan.warmup_steps, kind=train.lr_scheduler,
                     grad_accum=train.grad_accum)
    default_hooks = dict(
        timer=dict(type="IterTimerHook"),
        logger=dict(type="LoggerHook", interval=train.log_interval * train.grad_accum),
        param_scheduler=dict(type="ParamSchedulerHook"),
        checkpoint=dict(type="CheckpointHook", by_epoch=False,
                        interval=train.save_interval * train.grad_accum,
                        max_keep_ckpts=train.save_total_limit, save_last=True),
        sampler_seed=None)  # RunBatchSampler orders every epoch itself
    custom_hooks = [
        MetricsHook(train.log_interval, train.grad_accum, plan.total_steps),
        ExportHook(built.tokenizer, built.template, built.config_text),
    ]
    runner = Runner(
        model=CausalLMModel(built.model),
        work_dir=str(built.work_dir),
        train_dataloader=dataloader,
        train_cfg=dict(by_epoch=False, max_iters=plan.total_micro_batches),
        optim_wrapper=optim_wrapper,
        param_scheduler=[scheduler],
        default_hooks=default_hooks,
        custom_hooks=custom_hooks,
        log_processor=dict(by_epoch=False, window_size=train.log_interval * train.grad_accum),
        randomness=dict(seed=exp.seed),
        resume=resume is not None,
        load_from=resume if isinstance(resume, str) else None,
        default_scope="mmengine",
        env_cfg=dict(dist_cfg=dict(backend="gloo" if not torch.cuda.is_available() else "nccl")),
    )
    with allow_checkpoint_globals():  # resume loads with weights_only=True
        runner.train()
    return Path(built.work_dir) / HF_DIR_NAME
