"""The hf engine: run an experiment on Hugging Face's `transformers.Trainer`.

Only public extension points are used:

- `optimizers=(xft's optimizer, None)` and `XftTrainer.create_scheduler`: a
  LambdaLR over xft.engine.schedule.lr_lambda on whatever optimizer Trainer
  ends up with (its own wrapper after DeepSpeed set-up), so both engines update
  the same parameter groups on the same lr curve;
- `XftTrainer.get_train_dataloader`: a DataLoader over RunBatchSampler (the
  whole run is one "epoch" of total_steps * grad_accum micro-batches), so the
  data order is the one MMEngine sees, and Trainer's resume skips exactly the
  micro-batches already trained;
- `XftTrainer.get_batch_samples`: Trainer draws each optimizer step's
  micro-batches here before any backward; the returned count is the
  objective's count (xft.objectives: label tokens for SFT) of the whole window,
  all-reduced over ranks, which Trainer passes to
- `XftTrainer.compute_loss` as `num_items_in_batch`: the objective's loss sum
  times xft.engine.step_loss.loss_scale, already scaled for accumulation
  (`loss_is_scaled_for_ga = True`); the objective's metrics are summed with the
  same scale (StepMetrics);
- `XftTrainer._save` / `_load_from_checkpoint`: trained weights that a PEFT
  checkpoint (the adapter only) leaves out, such as PPO's value head on the
  policy, go to `xft_extra_weights.safetensors` beside it and are loaded back;
- `XftCallback`: metrics.jsonl / TensorBoard / progress line (TrainingMonitor)
  and evaluation chat, fed from Trainer's own log events.
"""

import itertools
import shutil
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from xft.console import deepspeed_announcing_cpu
from xft.data.sampler import RunBatchSampler
from xft.engine import distributed
from xft.engine.checkpoint_files import atomic_write_text, fsync_tree, remove_old
from xft.engine.engines import ENGINES, HF_COMPLETE_MARKER
from xft.engine.export import HF_DIR_NAME
from xft.engine.monitor import TrainingMonitor
from xft.engine.safe_load import check_pickles, make_trainer_rng_file_plain
from xft.engine.schedule import lr_lambda
from xft.engine.step_loss import StepMetrics, loss_scale, window_count
from xft.engine.model_card import RunCard
from xft.engine.validation import Validator, export_final
from xft.errors import XftError
from xft.inference.chat_eval import ChatEvaluator
from xft.model.optimizer import build_optimizer
from xft.outputs import disk_full_as_error

ENGINE = ENGINES["hf"]  # the checkpoint layout
EXTRA_WEIGHTS = "xft_extra_weights.safetensors"


class XftTrainer(Trainer):
    # compute_loss divides by the objective's count of the whole optimizer step itself.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, run_batches, monitor, lr_lambda, objective, step_metrics,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.run_batches, self.monitor, self.lr_lambda = run_batches, monitor, lr_lambda
        self.objective, self.step_metrics = objective, step_metrics

    def create_scheduler(self, num_training_steps, optimizer=None):
        """xft's lr curve (transformers', xft.engine.schedule), counted in optimizer steps (Trainer's own would be created
        otherwise, e.g. after DeepSpeed's set-up discards the one given)."""
        from torch.optim.lr_scheduler import LambdaLR

        if self.lr_scheduler is None:
            self.lr_scheduler = LambdaLR(optimizer or self.optimizer, self.lr_lambda)
        return self.lr_scheduler

    def _save_rng_state(self, output_dir):
        super()._save_rng_state(output_dir)
        # Trainer's own file name for this process's RNG state; made loadable with plain
        # weights_only=True, as every pickle of a checkpoint must be (safe_load).
        name = "rng_state.pth" if self.args.world_size <= 1 else \
            f"rng_state_{self.args.process_index}.pth"
        make_trainer_rng_file_plain(Path(output_dir) / name)

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        extra = extra_trained_weights(self.model)
        if extra and self.args.should_save:
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()},
                      str(Path(output_dir or self.args.output_dir) / EXTRA_WEIGHTS))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        extra = extra_trained_weights(self.model)
        if not extra:
            return
        path = Path(resume_from_checkpoint) / EXTRA_WEIGHTS
        if not path.exists():
            raise XftError(f"checkpoint {resume_from_checkpoint} lacks {EXTRA_WEIGHTS} (the "
                           f"trained weights outside the adapter: {sorted(extra)[:3]})")
        from safetensors.torch import load_file

        saved = load_file(str(path))
        if set(saved) != set(extra):
            raise XftError(f"{path} holds {sorted(saved)}, this model trains {sorted(extra)}")
        with torch.no_grad():
            for name, tensor in extra.items():
                tensor.copy_(saved[name])

    def get_train_dataloader(self):
        from torch.utils.data import DataLoader

        loader = DataLoader(self.train_dataset, batch_sampler=self.run_batches,
                            collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers)
        return self.accelerator.prepare(loader)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches = list(itertools.islice(epoch_iterator, num_batches))
        if not batches:
            return batches, None
        # RL objectives generate here, with the weights of this step.
        batches = self.objective.rollouts(self.model, batches, self.state.global_step,
                                          distributed.rank())
        return batches, window_count([self.objective.count(b) for b in batches], device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The micro-batch's share of the step's loss. xft evaluates with its own Validator,
        so Trainer's evaluation loop (which asks for outputs) is never run."""
        if return_outputs:
            raise NotImplementedError("xft validates with xft.engine.validation, not "
                                      "Trainer.evaluate")
        out = self.objective.loss(model, inputs)
        if num_items_in_batch is None:  # a batch on its own
            num_items_in_batch = window_count([out.count])
        scale = loss_scale(num_items_in_batch)
        if model.training:
            self.monitor.count_tokens(self.objective.batch_tokens(inputs), out.count)
            self.step_metrics.add(out.metrics, scale)
        return out.sum * scale


def extra_trained_weights(model):
    """{name: parameter} of a PEFT model's trained parameters outside its base model (what
    its adapter checkpoint does not hold); {} for any other model, whose checkpoint holds
    all its weights."""
    if not hasattr(model, "base_model") or not hasattr(model, "peft_config"):
        return {}
    return {name: p for name, p in model.named_parameters()
            if p.requires_grad and not name.startswith("base_model.")}


class XftCallback(TrainerCallback):
    """Feeds xft's TrainingMonitor and ChatEvaluator from Trainer's events."""

    def __init__(self, monitor, chat, step_metrics):
        self.monitor, self.chat, self.step_metrics = monitor, chat, step_metrics

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.monitor.start(state.global_step)
        self.chat.run(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # Runs before Trainer logs this step (on_log), on every rank (take() all-reduces).
        self.monitor.step_metrics(self.step_metrics.take())
        self.monitor.advance(state.global_step)
        if state.global_step == state.max_steps:
            control.should_log = True  # Trainer logs on the interval only; xft also logs the last step
        elif self.chat.due(state.global_step):
            self.chat.run(model, state.global_step)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        # Training logs carry the mean step loss since the previous log; the end-of-run
        # summary (train_loss, train_runtime...) has no "loss" key.
        if logs and "loss" in logs:
            self.monitor.write(state.global_step, logs["loss"], logs["learning_rate"],
                               logs.get("grad_norm", float("nan")))

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.chat.run(model, state.global_step)
        self.monitor.finish()


class XftValidationCallback(TrainerCallback):
    """Runs xft's Validator (eval loss, best weights, early stopping) after each step."""

    def __init__(self, validator):
        self.validator = validator

    def on_train_begin(self, args, state, control, **kwargs):
        self.validator.start(state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.validator.after_step(model, state.global_step):
            control.should_training_stop = True
        return control


class XftCheckpointCallback(TrainerCallback):
    """Marks checkpoint-N folders complete and keeps the newest `save_total_limit` of them.

    Trainer writes a checkpoint's files in place, one after another, and its
    last file (trainer_state.json) can itself be cut off, so no file Trainer
    writes tells a whole folder from a partial one. This callback removes the
    marker of a folder about to be (re)written, and writes it, after flushing
    every file, in `on_save`, which Trainer calls once the folder is saved.
    Rotation is done here too (Trainer's own is off): Trainer deletes old
    folders before `on_save` runs, which with a limit of 1 could leave no
    marked checkpoint at all after a kill.
    """

    def __init__(self, save_total_limit):
        self.save_total_limit = save_total_limit

    def on_step_end(self, args, state, control, **kwargs):
        # Runs after DefaultFlowCallback has decided whether this step saves.
        if control.should_save and args.should_save:
            marker = ENGINE.checkpoint_path(args.output_dir, state.global_step) / HF_COMPLETE_MARKER
            marker.unlink(missing_ok=True)

    def on_save(self, args, state, control, **kwargs):
        # Every process writes files of its own into the folder (its RNG state, its
        # DeepSpeed shards) with no barrier after them in Trainer: wait for all of them
        # before the folder is flushed and marked complete.
        args.distributed_state.wait_for_everyone()
        if not args.should_save:  # not the process that writes the marker
            return
        folder = ENGINE.checkpoint_path(args.output_dir, state.global_step)
        fsync_tree(folder)
        atomic_write_text(folder / HF_COMPLETE_MARKER, f"{state.global_step}\n")
        remove_old(ENGINE.checkpoints(args.output_dir), state.global_step,
                   self.save_total_limit, ENGINE.is_complete, remove=shutil.rmtree)


def training_arguments(exp, plan, work_dir, deepspeed=None):
    import torch

    train, optim = exp.train, exp.optim
    return TrainingArguments(
        deepspeed=deepspeed,  # a resolved config dict (xft.engine.deepspeed_config) or None
        # Autocast with fp32 master weights (xft.engine.precision). Under DeepSpeed,
        # Trainer checks these against the DeepSpeed config, which xft filled from the
        # same settings (xft.engine.deepspeed_config.precision_flags).
        bf16=deepspeed["bf16"]["enabled"] if deepspeed else train.mixed_precision == "bf16",
        fp16=deepspeed["fp16"]["enabled"] if deepspeed else train.mixed_precision == "fp16",
        # Without CUDA, Trainer runs bf16, data-parallel (gloo) or DeepSpeed only when
        # told to run on the CPU.
        use_cpu=not torch.cuda.is_available(),
        output_dir=str(work_dir),
        per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        max_steps=plan.total_steps,
        learning_rate=optim.lr,  # for Trainer's records; the optimizer is xft's own
        # 0 disables clipping; Trainer still computes and logs the norm.
        max_grad_norm=optim.max_grad_norm if optim.max_grad_norm is not None else 0.0,
        logging_steps=train.log_interval,
        logging_nan_inf_filter=False,  # log the real loss, as MMEngine does
        save_strategy="steps",
        save_steps=train.save_interval,
        save_total_limit=None,  # XftCheckpointCallback rotates, after marking complete
        seed=exp.seed,
        dataloader_num_workers=exp.data.num_workers,
        remove_unused_columns=False,  # xft's collator already builds model inputs
        report_to="none",  # TensorBoard is written by xft's monitor, like on MMEngine
        disable_tqdm=True,  # the monitor prints the progress line with ETA
    )


def run(built, resume=None, deepspeed=None):
    """Train with transformers.Trainer. `built` is an xft.engine.builder.BuiltExperiment.

    `resume`: None (fresh run), True (newest complete checkpoint in the work dir) or a
    checkpoint-N folder. `deepspeed`: None or a resolved DeepSpeed config dict.
    """
    exp, plan = built.experiment, built.plan
    checkpoint = ENGINE.resolve_resume(resume, built.work_dir)
    # Every rank's micro-batches in turn: Accelerate's prepare() hands rank r every
    # world_size-th batch, i.e. its own share of each global batch.
    batches = RunBatchSampler(len(built.dataset), exp.train.batch_size,
                              plan.total_micro_batches, shuffle=exp.data.shuffle, seed=exp.seed,
                              world_size=distributed.world_size())
    optimizer = build_optimizer(built.model, exp.optim, exp.method)

    monitor = TrainingMonitor(built.work_dir, plan.total_steps, exp.train.log_interval,
                              built.objective, exp)
    chat = ChatEvaluator(exp.evaluation, built.tokenizer, built.template, exp.system,
                         built.work_dir, writes=distributed.is_main_process(),
                         log=monitor.say)
    step_metrics = StepMetrics()
    callbacks = [XftCallback(monitor, chat, step_metrics),
                 XftCheckpointCallback(exp.train.save_total_limit)]
    validator = (Validator(built, monitor, chat, log=monitor.say)
                 if built.validation is not None else None)
    if validator is not None:
        callbacks.append(XftValidationCallback(validator))
    with deepspeed_announcing_cpu():  # Trainer's set-up imports DeepSpeed
        trainer = XftTrainer(
            model=built.model,
            args=training_arguments(exp, plan, built.work_dir, deepspeed),
            train_dataset=built.dataset,
            data_collator=built.collator,
            optimizers=(optimizer, None),  # the schedule: XftTrainer.create_scheduler
            callbacks=callbacks,
            run_batches=batches,
            monitor=monitor,
            lr_lambda=lr_lambda(exp.train, plan.total_steps, plan.warmup_steps, exp.optim.lr),
            objective=built.objective,
            step_metrics=step_metrics,
        )
    trainer.remove_callback(PrinterCallback)  # the monitor's line replaces raw log dicts
    if checkpoint is not None:
        check_pickles(checkpoint)  # Trainer and DeepSpeed load these files themselves
    # Trainer's checkpoint writes are its own; a full disk there still gets one line
    # (naming the work dir when the library's error names no file).
    with disk_full_as_error(built.work_dir):
        trainer.train(resume_from_checkpoint=checkpoint)
    return export_final(trainer.model, built.tokenizer, built.template,
                        Path(built.work_dir) / HF_DIR_NAME, built.config_text, validator,
                        RunCard(exp, built.work_dir))  # `xft train` prints where
