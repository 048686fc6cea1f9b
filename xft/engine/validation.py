"""Validation during training, identical for every engine.

Engines call `Validator.after_step(model, step)` after each optimizer step.
Every `train.eval_interval` steps and after the last step it evaluates the
objective on the held-out set (xft.engine.evaluate; the record is the
objective's `eval_record`, for SFT eval_loss and eval_ppl) and reports it
through the TrainingMonitor (metrics.jsonl, TensorBoard, progress line), has
the evaluation chat answer its prompts, and then, judging by the objective's
`validation_key` (SFT: eval_loss; lower is better unless validation_mode is
'max'):

- with `train.save_best`: exports the weights to work_dir/best (a Hugging
  Face artifact, like work_dir/hf) whenever the key is the best so far, with
  best.json saying at which step;
- with `train.early_stopping`: counts evaluations in a row that did not
  improve the best value by more than min_delta, and asks the engine to stop
  when that count reaches patience (`should_stop`).

On resume, the best value and the patience count are rebuilt from the eval
records already in metrics.jsonl, so a resumed run decides as the
uninterrupted one would.
"""

import json
import shutil
from pathlib import Path

from xft.engine.evaluate import evaluate
from xft.engine.distributed import barrier, is_main_process
from xft.engine.export import export_hf_from_ranks
from xft.engine.model_card import RunCard
from xft.outputs import write_output
from xft.engine.monitor import read_metrics

BEST_DIR_NAME = "best"
BEST_INFO_FILE = "best.json"


class Validator:
    def __init__(self, built, monitor, chat, log=print):
        """The held-out set is evaluated by the run's objective (built.objective), as it is
        trained (SFT: labels only, in chunks, sharing the loss's workspace)."""
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
        self.card = RunCard(built.experiment, built.work_dir)
        self.best_dir = Path(built.work_dir) / BEST_DIR_NAME
        self.best_value, self.best_step = None, None
        self.reference, self.stale = None, 0  # early stopping's loss to beat, evaluations since
        self.should_stop = False
        self.objective = built.objective
        self.key = built.objective.validation_key
        # Improvement is a decrease; for a 'max' key (an accuracy) the sign is flipped.
        self.sign = -1.0 if built.objective.validation_mode == "max" else 1.0

    def start(self, first_step):
        """Replay the eval records of earlier steps (a resumed run) to restore the best loss."""
        for record in read_metrics(self.monitor.work_dir):
            if self.key in record and record["step"] <= first_step:
                self._update(record["step"], record[self.key])

    def due(self, step):
        return (self.interval is not None and step % self.interval == 0) or \
            step == self.total_steps

    def after_step(self, model, step):
        """Evaluate when due; True when the run should stop early."""
        if self.due(step):
            self.evaluate(model, step)
        return self.should_stop

    def evaluate(self, model, step):
        result = evaluate(model, self.dataset, self.collator, self.objective, self.batch_size)
        values = {key: round(value, 6) if isinstance(value, float) else value
                  for key, value in result.record(self.objective).items()}
        improved = self._update(step, values[self.key])
        record = {**values, f"best_{self.key}": round(self.best_value, 6),
                  "best_step": self.best_step}
        note = "  (best)" if improved else f"  (best {self.best_value:.4f} @ step {self.best_step})"
        if self.should_stop:
            record["early_stop"] = True
        shown = [key for key, value in values.items() if isinstance(value, float)]
        self.monitor.write_eval(step, record, shown, note)
        if improved and self.save_best:
            self._save_best(model, step, values[self.key])
        self.chat.run(model, step)
        if self.should_stop:
            patience, min_delta = self.early_stopping.patience, self.early_stopping.min_delta
            self.log(f"early stopping at step {step}/{self.total_steps}: {self.key} has not "
                     f"improved on {self.reference:.4f} by more than {min_delta:g} for "
                     f"{patience} evaluation(s); best {self.best_value:.4f} at step "
                     f"{self.best_step}")
        return result

    def _update(self, step, value):
        """Track the best value of the validation key and the patience count; True when
        `value` is a new best."""
        loss = self.sign * value  # lower is better from here on
        improved = self.best_value is None or loss < self.sign * self.best_value
        if improved:  # the best checkpoint is simply the best value
            self.best_value, self.best_step = value, step
        if self.early_stopping:
            # Patience counts from the last improvement larger than min_delta.
            if (self.reference is None
                    or loss < self.sign * self.reference - self.early_stopping.min_delta):
                self.reference, self.stale = value, 0
            else:
                self.stale += 1
                self.should_stop = self.stale >= self.early_stopping.patience
        return improved

    def _save_best(self, model, step, loss):
        # Every rank takes part (ZeRO-3 gathers weights); rank 0 writes.
        export_hf_from_ranks(model, self.tokenizer, self.template, self.best_dir,
                             self.config_text, self.card, card_step=step)
        if is_main_process():
            info = {"step": step, self.key: loss}
            (self.best_dir / BEST_INFO_FILE).write_text(json.dumps(info) + "\n",
                                                        encoding="utf-8")
        self.log(f"best {self.key} so far: weights of step {step} exported to {self.best_dir}")


def export_final(model, tokenizer, template, out_dir, config_text, validator=None, card=None):
    """Write the run's artifact to out_dir: the best weights when train.export_best asks
    for them (and a best export exists; its model card has the metrics up to that step),
    else the weights as they are now (`card`: xft.engine.model_card.RunCard).
    Called on every rank; rank 0 writes."""
    if validator is not None and validator.export_best and validator.best_dir.is_dir():
        if is_main_process():
            write_output(out_dir, lambda tmp: shutil.copytree(validator.best_dir, tmp,
                                                                dirs_exist_ok=True))
            validator.log(f"final artifact: the best weights (step {validator.best_step}, "
                          f"{validator.key} {validator.best_value:.4f})")
        barrier()
        return Path(out_dir)
    return export_hf_from_ranks(model, tokenizer, template, out_dir, config_text, card)
