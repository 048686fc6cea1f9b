"""Run an experiment on Hugging Face's `transformers.Trainer`.

Only public extension points are used:

- `optimizers=(xft's optimizer, LambdaLR over xft.engine.schedule.lr_factor)`,
  so both engines update the same parameter groups on the same lr curve;
- `XftTrainer.get_train_dataloader`: a DataLoader over RunBatchSampler (the
  whole run is one "epoch" of total_steps * grad_accum micro-batches), so the
  data order is the one MMEngine sees, and Trainer's resume skips exactly the
  micro-batches already trained;
- `XftTrainer.get_batch_samples`: Trainer draws each optimizer step's
  micro-batches here before any backward; the returned count is xft's label
  tokens of the whole window (all-reduced over ranks), which Trainer passes to
- `XftTrainer.compute_loss` as `num_items_in_batch`: token-loss sum times
  xft.engine.step_loss.loss_scale, already scaled for accumulation
  (`loss_is_scaled_for_ga = True`);
- `XftCallback`: metrics.jsonl / TensorBoard / progress line (TrainingMonitor)
  and evaluation chat, fed from Trainer's own log events.
"""

import itertools
import re
from pathlib import Path

from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from xft.data.sampler import RunBatchSampler
from xft.engine.chat_eval import ChatEvaluator
from xft.engine.export import HF_DIR_NAME, export_hf
from xft.engine.monitor import TrainingMonitor, input_tokens
from xft.engine.schedule import lr_factor
from xft.engine.step_loss import loss_scale, window_label_tokens
from xft.errors import XftError
from xft.model.loss import CausalLMLoss, causal_lm_logits, token_loss_sum, training_loss
from xft.model.optimizer import build_optimizer

CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
# Trainer writes this file last into a checkpoint folder: its presence marks a complete one.
TRAINER_STATE_FILE = "trainer_state.json"


class XftTrainer(Trainer):
    # compute_loss divides by the label tokens of the whole optimizer step itself.
    loss_is_scaled_for_ga = True

    def __init__(self, *args, run_batches, monitor, loss=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.run_batches, self.monitor = run_batches, monitor
        self.loss = loss or CausalLMLoss()

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
        return batches, window_label_tokens([b["labels"].to(device) for b in batches])

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        if return_outputs:  # the caller wants logits at every position
            logits = causal_lm_logits(model, inputs)
            loss_sum, label_tokens = token_loss_sum(logits, labels)
        else:
            loss_sum, label_tokens = self.loss(model, inputs)
        if num_items_in_batch is None:  # a batch on its own (evaluation)
            num_items_in_batch = window_label_tokens([labels])
        loss = loss_sum * loss_scale(num_items_in_batch)
        if model.training:
            self.monitor.count_tokens(input_tokens(inputs), label_tokens)
        return (loss, {"logits": logits}) if return_outputs else loss


class XftCallback(TrainerCallback):
    """Feeds xft's TrainingMonitor and ChatEvaluator from Trainer's events."""

    def __init__(self, monitor, chat):
        self.monitor, self.chat = monitor, chat

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.monitor.start(state.global_step)
        self.chat.run(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
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


def newest_complete_checkpoint(work_dir):
    """The checkpoint-N folder with the highest N whose trainer state was written, or None."""
    found = []
    for path in Path(work_dir).glob("checkpoint-*"):
        match = CHECKPOINT_DIR.match(path.name)
        if match and (path / TRAINER_STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return str(max(found)[1]) if found else None


def resolve_resume(resume, work_dir):
    """None, or the checkpoint folder to resume from; an error when there is none."""
    if resume is None:
        return None
    if resume is True:
        checkpoint = newest_complete_checkpoint(work_dir)
        if checkpoint is None:
            raise XftError(f"--resume: no complete checkpoint-N folder in {work_dir}")
        return checkpoint
    if not (Path(resume) / TRAINER_STATE_FILE).is_file():
        raise XftError(f"--resume: {resume} is not a complete Trainer checkpoint "
                       f"(no {TRAINER_STATE_FILE})")
    return str(resume)


def training_arguments(exp, plan, work_dir):
    train, optim = exp.train, exp.optim
    return TrainingArguments(
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
        save_total_limit=train.save_total_limit,
        seed=exp.seed,
        dataloader_num_workers=exp.data.num_workers,
        remove_unused_columns=False,  # xft's collator already builds model inputs
        report_to="none",  # TensorBoard is written by xft's monitor, like on MMEngine
        disable_tqdm=True,  # the monitor prints the progress line with ETA
    )


def run_hf(built, resume=None):
    """Train with transformers.Trainer. `built` is an xft.engine.builder.BuiltExperiment.

    `resume`: None (fresh run), True (newest complete checkpoint in the work dir) or a
    checkpoint-N folder.
    """
    from torch.optim.lr_scheduler import LambdaLR

    exp, plan = built.experiment, built.plan
    checkpoint = resolve_resume(resume, built.work_dir)
    batches = RunBatchSampler(len(built.dataset), exp.train.batch_size,
                              plan.total_micro_batches, shuffle=exp.data.shuffle, seed=exp.seed)
    optimizer = build_optimizer(built.model, exp.optim, exp.method)
    schedule = LambdaLR(optimizer, lambda step: lr_factor(step, plan.total_steps,
                                                          plan.warmup_steps,
                                                          exp.train.lr_scheduler))
    monitor = TrainingMonitor(built.work_dir, plan.total_steps, exp.train.log_interval)
    chat = ChatEvaluator(exp.evaluation, built.tokenizer, built.template, exp.system,
                         built.work_dir)
    trainer = XftTrainer(
        model=built.model,
        args=training_arguments(exp, plan, built.work_dir),
        train_dataset=built.dataset,
        data_collator=built.collator,
        optimizers=(optimizer, schedule),
        callbacks=[XftCallback(monitor, chat)],
        run_batches=batches,
        monitor=monitor,
        loss=training_loss(exp.train),
    )
    trainer.remove_callback(PrinterCallback)  # the monitor's line replaces raw log dicts
    trainer.train(resume_from_checkpoint=checkpoint)
    out = export_hf(trainer.model, built.tokenizer, built.template,
                    Path(built.work_dir) / HF_DIR_NAME, built.config_text)
    print(f"Hugging Face artifact written to {out}")
    return out
