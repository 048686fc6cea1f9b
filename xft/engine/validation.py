"""Validation during training, identical for every engine.

Engines call `Validator.after_step(model, step)` after each optimizer step.
Every `train.eval_interval` steps and after the last step it computes the
validation loss and perplexity (xft.engine.evaluate) and reports them through
the TrainingMonitor (metrics.jsonl, TensorBoard, progress line), has the
evaluation chat answer its prompts, and then

- with `train.save_best='eval_loss'`: exports the weights to work_dir/best
  (a Hugging Face artifact, like work_dir/hf) whenever eval_loss is the lowest
  so far, with best.json saying at which step;
- with `train.early_stopping`: counts evaluations in a row that did not lower
  the best eval_loss by more than min_delta, and asks the engine to stop when
  that count reaches patience (`should_stop`).

On resume, the best loss and the patience count are rebuilt from the eval
records already in metrics.jsonl, so a resumed run decides as the
uninterrupted one would.
"""

import json
import shutil
from pathlib import Path

from xft.engine.evaluate import evaluate_loss
from xft.engine.distributed import barrier, is_main_process
from xft.engine.export import export_hf_from_ranks
from xft.outputs import write_output
from xft.engine.monitor import read_metrics

BEST_DIR_NAME = "best"
BEST_INFO_FILE = "best.json"


class Validator:
    def __init__(self, built, monitor, chat, loss, log=print):
        """`loss`: the engine's training loss (CausalLMLoss), so the held-out set is
        evaluated as it is trained (labels only, in chunks) and shares its workspace."""
        train = built.experiment.train
        self.dataset, self.collator, self.batch_size = built.validation, built.collator, \
            train.batch_size
        self.interval, self.total_steps = train.eval_interval, built.plan.total_steps
        self.save_best, self.export_best = train.save_best is not None, train.export_best
        self.early_stopping = train.early_stopping
        self.monitor, self.chat = monitor, chat
        self.log = log if is_main_process() else (lambda message: None)  # rank 0 speaks
        self.tokenizer, self.template = built.tokenizer, built.template
        self.config_text = built.config_text
        self.best_dir = Path(built.work_dir) / BEST_DIR_NAME
        self.best_loss, self.best_step = None, None
        self.reference, self.stale = None, 0  # early stopping's loss to beat, evaluations since
        self.should_stop = False
        self.loss = loss

    def start(self, first_step):
        """Replay the eval records of earlier steps (a resumed run) to restore the best loss."""
        for record in read_metrics(self.monitor.work_dir):
            if "eval_loss" in record and record["step"] <= first_step:
                self._update(record["step"], record["eval_loss"])

    def due(self, step):
        return (self.interval is not None and step % self.interval == 0) or \
            step == self.total_steps

    def after_step(self, model, step):
        """Evaluate when due; True when the run should stop early."""
        if self.due(step):
            self.evaluate(model, step)
        return self.should_stop

    def evaluate(self, model, step):
        result = evaluate_loss(model, self.dataset, self.collator, self.batch_size, self.loss)
        improved = self._update(step, result.loss)
        record = {"eval_loss": round(result.loss, 6), "eval_ppl": round(result.ppl, 6),
                  "eval_label_tokens": result.label_tokens,
                  "best_eval_loss": round(self.best_loss, 6), "best_step": self.best_step}
        note = "  (best)" if improved else f"  (best {self.best_loss:.4f} @ step {self.best_step})"
        if self.should_stop:
            record["early_stop"] = True
        self.monitor.write_eval(step, record, note)
        if improved and self.save_best:
            self._save_best(model, step, result.loss)
        self.chat.run(model, step)
        if self.should_stop:
            patience, min_delta = self.early_stopping.patience, self.early_stopping.min_delta
            self.log(f"early stopping at step {step}/{self.total_steps}: eval_loss has not "
                     f"improved on {self.reference:.4f} by more than {min_delta:g} for "
                     f"{patience} evaluation(s); best {self.best_loss:.4f} at step "
                     f"{self.best_step}")
        return result

    def _update(self, step, loss):
        """Track the best loss and the patience count; True when `loss` is a new best."""
        improved = self.best_loss is None or loss < self.best_loss
        if improved:  # the best checkpoint is simply the lowest loss
            self.best_loss, self.best_step = loss, step
        if self.early_stopping:
            # Patience counts from the last improvement larger than min_delta.
            if self.reference is None or loss < self.reference - self.early_stopping.min_delta:
                self.reference, self.stale = loss, 0
            else:
                self.stale += 1
                self.should_stop = self.stale >= self.early_stopping.patience
        return improved

    def _save_best(self, model, step, loss):
        # Every rank takes part (ZeRO-3 gathers weights); rank 0 writes.
        export_hf_from_ranks(model, self.tokenizer, self.template, self.best_dir,
                             self.config_text)
        if is_main_process():
            info = {"step": step, "eval_loss": loss}
            (self.best_dir / BEST_INFO_FILE).write_text(json.dumps(info) + "\n",
                                                        encoding="utf-8")
        self.log(f"best eval_loss so far: weights of step {step} exported to {self.best_dir}")


def export_final(model, tokenizer, template, out_dir, config_text, validator=None):
    """Write the run's artifact to out_dir: the best weights when train.export_best asks
    for them (and a best export exists), else the weights as they are now.
    Called on every rank; rank 0 writes."""
    if validator is not None and validator.export_best and validator.best_dir.is_dir():
        if is_main_process():
            write_output(out_dir, lambda tmp: shutil.copytree(validator.best_dir, tmp,
                                                                dirs_exist_ok=True))
            validator.log(f"final artifact: the best weights (step {validator.best_step}, "
                          f"eval_loss {validator.best_loss:.4f})")
        barrier()
        return Path(out_dir)
    return export_hf_from_ranks(model, tokenizer, template, out_dir, config_text)
