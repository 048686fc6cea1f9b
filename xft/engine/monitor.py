"""What a user watches during a run, identical for every engine.

Engines report each optimizer step to a `TrainingMonitor`; every `log_interval`
steps (and at the last step) it writes one record to work_dir/metrics.jsonl,
the same scalars to the run's trackers (xft.engine.trackers: TensorBoard in
work_dir/tensorboard by default; W&B, MLflow, SwanLab), and one console line
with throughput and ETA; on a terminal a progress bar with ETA moves every step
(the lines print above it). Every console line of the run (evaluation, chat
samples, best weights) goes through `say`, which also hands it to `also_log`
(the mmengine engine: MMEngine's log file). A record holds the loss, the objective's metrics
(Objective.metric_names, means over the logged steps) and its count under the
objective's `count_key` (SFT: label_tokens). Validation results
(xft.engine.validation) go to the same three places as records of their own:
{step, eval_loss, ...} (the objective's Objective.eval_record).
At the end it draws work_dir/loss_curve.png from the whole metrics file (a
resumed run's earlier records included): training and validation loss.
"""

import json
import sys
import time
from pathlib import Path

from xft.engine.checkpoint_files import atomic_write_text
from xft.engine.distributed import is_main_process
from xft.engine.trackers import Trackers

METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"
REWARD_KEY = "reward/total/mean"  # logged by RL objectives (xft.objectives.online)


def is_logged_step(step, log_interval, total_steps):
    """Whether optimizer step `step` (from 1) gets a metrics record."""
    return step % log_interval == 0 or step == total_steps


class TrainingMonitor:
    """Writes on rank 0 only; the other ranks of a distributed run keep silent."""

    def __init__(self, work_dir, total_steps, log_interval, objective, experiment=None):
        """`experiment`: the run's config, for its trackers (train.report_to, train.project;
        None: TensorBoard only) and the configuration they record."""
        self.work_dir = Path(work_dir)
        self.experiment = experiment
        self.count_key = objective.count_key  # the record key of the step's count
        self.total_steps, self.log_interval = total_steps, log_interval
        self.trackers = self.bar = None
        self.writes = is_main_process()
        self.also_log = None  # another place every console line goes (a log file)

    def say(self, line):
        """One console line (rank 0 only), above the progress bar if there is one."""
        if not self.writes:
            return
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)
        if self.also_log is not None:
            self.also_log(line)

    def advance(self, step):
        """The progress bar to optimizer step `step` (every engine calls it each step)."""
        if self.bar is not None:
            self.bar.update(step - self.bar.n)

    def start(self, first_step):
        """Call before the first optimizer step; `first_step` > 0 when resuming."""
        if self.writes:
            keep_records_up_to(self.work_dir, first_step)
            train = self.experiment.train if self.experiment is not None else None
            self.trackers = Trackers(train.report_to if train else ["tensorboard"],
                                     self.work_dir, train.project if train else "xft",
                                     self.experiment)
            if sys.stderr.isatty():  # a terminal: a live bar; a pipe or file: the lines only
                from tqdm.auto import tqdm

                self.bar = tqdm(total=self.total_steps, initial=first_step, unit="step",
                                desc="training", dynamic_ncols=True)
        self.start_time = self.window_start = time.time()
        self.first_step = first_step
        self._new_window()

    def _new_window(self):
        self.loss_sum, self.steps, self.tokens, self.count = 0.0, 0, 0, 0
        self.metric_sums, self.metric_steps = {}, 0

    def count_tokens(self, tokens, count):
        """Tokens (non-padding) and the objective's count (SFT: label tokens) of one
        micro-batch, or of a rank's window."""
        self.tokens += int(tokens)
        self.count += int(count)

    def step_metrics(self, metrics):
        """The objective's metrics of one optimizer step ({} when it has none)."""
        if not metrics:
            return
        for name, value in metrics.items():
            self.metric_sums[name] = self.metric_sums.get(name, 0.0) + float(value)
        self.metric_steps += 1

    def should_log(self, step):
        return is_logged_step(step, self.log_interval, self.total_steps)

    def step_end(self, step, loss, lr, grad_norm, metrics=None):
        """One optimizer step done: `loss` is its normalised loss (see xft.engine.step_loss),
        `metrics` the objective's."""
        self.step_metrics(metrics)
        self.loss_sum += float(loss)
        self.steps += 1
        self.advance(step)
        if self.should_log(step):
            self.write(step, self.loss_sum / self.steps, lr, grad_norm)

    def write(self, step, mean_loss, lr, grad_norm):
        """Write one record; `mean_loss` is the mean step loss since the previous record."""
        if not self.writes:
            self._new_window()
            return
        now = time.time()
        metrics = {name: round(total / self.metric_steps, 6)
                   for name, total in self.metric_sums.items()}
        record = {
            "step": step,
            "loss": round(float(mean_loss), 6),
            **metrics,
            "lr": float(lr),
            "grad_norm": round(float(grad_norm), 6),
            "tokens": self.tokens,
            self.count_key: self.count,
            "tokens_per_s": round(self.tokens / max(now - self.window_start, 1e-9), 1),
            "elapsed": round(now - self.start_time, 3),
        }
        with open(self.work_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.trackers.log({f"train/{key}": value for key, value in record.items()
                           if key != "step"}, step)
        done = step - self.first_step
        eta = (now - self.start_time) / max(done, 1) * (self.total_steps - step)
        shown = "".join(f"  {name} {value:.4g}" for name, value in metrics.items())
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
        self.say(f"step {step}/{self.total_steps}  loss {record['loss']:.4f}{shown}  "
                 f"lr {lr:.3g}  grad_norm {record['grad_norm']:.3g}  "
                 f"{record['tokens_per_s']:.0f} tokens/s  "
                 f"elapsed {_clock(record['elapsed'])}  eta {_clock(eta)}")
        self.window_start = now
        self._new_window()

    def write_eval(self, step, record, shown, note=""):
        """Write a validation record (Objective.eval_record plus best-so-far keys) for `step`;
        `shown`: its keys of the objective's own values (eval_loss, ...), each also a
        TensorBoard scalar eval/<name> and shown on the console line."""
        if not self.writes:
            return
        record = {"step": step, **record}
        with open(self.work_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.trackers.log({f"eval/{key.removeprefix('eval_')}": record[key] for key in shown},
                          step)
        values = "  ".join(f"{key} {record[key]:.4g}" for key in shown)
        self.say(f"eval @ step {step}/{self.total_steps}  {values}{note}")

    def finish(self):
        if not self.writes:
            return
        if self.trackers is not None:
            self.trackers.close()
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        path = plot_loss_curve(self.work_dir)
        if path is not None:
            self.say(f"loss curve: {path}")


def read_metrics(work_dir):
    path = Path(work_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def keep_records_up_to(work_dir, step):
    """Drop the metrics records after `step`, where this run starts.

    A run resumed after a kill redoes the steps after its checkpoint, and a
    fresh run in a used work dir starts over: either way the file then holds
    one record per logged step of this run. A last line cut off by the kill is
    dropped too.
    """
    path = Path(work_dir) / METRICS_FILE
    if not path.is_file():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
    kept = []
    for index, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if index == len(lines) - 1:  # the process was killed while appending it
                break
            raise
        if record["step"] <= step:
            kept.append(line)
    if len(kept) < len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def plot_loss_curve(work_dir):
    """Draw training and validation loss (and, for RL, the mean reward) against optimizer
    step from metrics.jsonl; None when nothing was logged."""
    fig = loss_figure(read_metrics(work_dir))
    if fig is None:
        return None
    path = Path(work_dir) / LOSS_CURVE_FILE
    fig.savefig(path, dpi=100)
    return path


def loss_figure(records, size=(7, 4)):
    """A matplotlib Figure of the loss records (also drawn live by `xft webui`), with a
    reward panel below for RL objectives; None when there are none."""
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    # A bare Figure (no pyplot) renders to a file without touching the process's backend.
    from matplotlib.figure import Figure

    rewards = [r for r in train if REWARD_KEY in r]  # RL objectives: a reward panel below
    fig = Figure(figsize=(size[0], size[1] * 7 / 4) if rewards else size)
    ax = fig.add_subplot(2, 1, 1) if rewards else fig.add_subplot()
    if rewards:
        reward_ax = fig.add_subplot(2, 1, 2, sharex=ax)
        reward_ax.plot([r["step"] for r in rewards], [r[REWARD_KEY] for r in rewards],
                       marker=".", color="tab:green")
        reward_ax.set_xlabel("optimizer step")
        reward_ax.set_ylabel("mean reward of the rollouts")
        reward_ax.grid(alpha=0.3)
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], marker=".",
            label="training")
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], marker="o",
                label="validation")
        ax.legend()
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (sum of token losses / label tokens)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
