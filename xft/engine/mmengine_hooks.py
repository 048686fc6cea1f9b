"""xft's MMEngine hooks: metrics and evaluation chat, validation, export, RNG state and
atomic checkpoints. Each feeds an engine-independent piece (xft.engine.monitor,
xft.engine.validation, xft.engine.export) from Runner's events.
"""

import os
import random
from pathlib import Path

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from xft.engine import distributed
from xft.engine.checkpoint_files import (TMP_SUFFIX, atomic_write_text, complete_torch_file,
                                         remove_old)
from xft.engine.engines import ENGINES, MMENGINE_LAST_CHECKPOINT
from xft.engine.export import HF_DIR_NAME
from xft.engine.safe_load import plain_checkpoint, plain_numpy_rng, restore_message_hub
from xft.outputs import save_torch
from xft.engine.validation import export_final

ENGINE = ENGINES["mmengine"]


@HOOKS.register_module(name="XftMonitorHook")
class MonitorHook(Hook):
    """Feeds xft's TrainingMonitor and ChatEvaluator (identical for both engines)."""

    # Before ParamSchedulerHook (LOW): the lr read here is the one this step used.
    priority = "BELOW_NORMAL"

    def __init__(self, monitor, chat, metric_names):
        self.monitor, self.chat, self.metric_names = monitor, chat, metric_names

    def before_train(self, runner):
        self.monitor.start(runner.iter)
        self.chat.run(_lm(runner), runner.iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        step = runner.iter + 1
        self.monitor.count_tokens(outputs["tokens"], outputs["count"])
        grad_norm = runner.message_hub.get_scalar("train/grad_norm").current()
        self.monitor.step_end(step, outputs["loss"], runner.optim_wrapper.get_lr()["lr"][0],
                              grad_norm, {name: outputs[name] for name in self.metric_names})
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

    def __init__(self, tokenizer, template, config_text, validator=None, card=None):
        self.tokenizer, self.template, self.config_text = tokenizer, template, config_text
        self.validator, self.card = validator, card

    def after_train(self, runner):
        out = export_final(_lm(runner), self.tokenizer, self.template,
                           Path(runner.work_dir) / HF_DIR_NAME, self.config_text, self.validator,
                           self.card)
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
        frozen weights it does not hold (ObjectiveModel.state_dict)."""
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
        final = ENGINE.checkpoint_path(work_dir, step)
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
        atomic_write_text(work_dir / MMENGINE_LAST_CHECKPOINT, str(final))
        remove_old(ENGINE.checkpoints(work_dir), step, self.max_keep, complete_torch_file,
                   remove=Path.unlink)


def _lm(runner):
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    return model.lm
