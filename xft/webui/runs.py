"""Training runs started from the web UI: each a detached `xft train` process and a work dir.

A run is a folder under the runs root holding everything about it, so its state
never depends on the browser tab or on the web UI process that started it:

    config.py       the experiment: `_base_` = the chosen config, plus the edited fields
    xft_run.json    the command, its pid, and 'stopped' once the user stopped it
    train.log       the process's output
    metrics.jsonl, iter_N.pth, hf/ ...   what `xft train --work-dir` writes

The process runs in its own session (`start_new_session`), so closing the tab,
or the web UI, leaves it training. Stop sends SIGTERM to its process group;
resume starts `xft train --resume` in the same work dir (from its newest
checkpoint).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from xft.engine.export import HF_DIR_NAME
from xft.engine.monitor import read_metrics
from xft.errors import XftError

RUN_FILE = "xft_run.json"
CONFIG_FILE = "config.py"
LOG_FILE = "train.log"
_PROGRESS = re.compile(r"step (\d+)/(\d+)")


@dataclass
class RunState:
    name: str
    state: str  # running | finished | stopped | failed
    step: int
    total_steps: int  # 0 until the log shows it
    loss: float  # last logged loss, nan before the first record

    def row(self):
        loss = "" if self.loss != self.loss else f"{self.loss:.4f}"
        progress = f"{self.step}/{self.total_steps}" if self.total_steps else str(self.step)
        return [self.name, self.state, progress, loss]


class RunStore:
    """The runs under one root folder."""

    def __init__(self, root):
        self.root = Path(root).resolve()
        self._children = {}  # pid -> Popen, for the processes this UI started (reaped here)

    def path(self, name):
        if not name or "/" in name or name.startswith("."):
            raise XftError(f"bad run name {name!r}")
        return self.root / name

    def names(self):
        """Runs, newest first."""
        if not self.root.is_dir():
            return []
        runs = [p for p in self.root.iterdir() if (p / RUN_FILE).is_file()]
        return [p.name for p in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)]

    def launch(self, name, config_text):
        """Write the run's config and start `xft train` on it, detached; returns the run dir."""
        run_dir = self.path(name)
        if run_dir.exists():
            raise XftError(f"a run named '{name}' exists already in {self.root}; choose "
                           "another name")
        run_dir.mkdir(parents=True)
        (run_dir / CONFIG_FILE).write_text(config_text, encoding="utf-8")
        self._start(run_dir, train_command(run_dir / CONFIG_FILE, run_dir))
        return run_dir

    def resume(self, name):
        run_dir = self.path(name)
        if self.state(name).state == "running":
            raise XftError(f"run '{name}' is running")
        self._start(run_dir, train_command(run_dir / CONFIG_FILE, run_dir, resume=True))

    def stop(self, name):
        info = self._info(name)
        if self._alive(info.get("pid"), self.path(name)):
            os.killpg(info["pid"], signal.SIGTERM)
        self._write_info(self.path(name), dict(info, stopped=True))

    def _start(self, run_dir, command):
        log = open(run_dir / LOG_FILE, "a", encoding="utf-8")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        process = subprocess.Popen(command, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        self._children[process.pid] = process
        self._write_info(run_dir, {"command": command, "pid": process.pid,
                                   "started": time.time(), "stopped": False})

    def _info(self, name):
        return json.loads((self.path(name) / RUN_FILE).read_text(encoding="utf-8"))

    @staticmethod
    def _write_info(run_dir, info):
        tmp = run_dir / (RUN_FILE + ".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        tmp.replace(run_dir / RUN_FILE)

    def _alive(self, pid, run_dir):
        if pid in self._children:
            return self._children[pid].poll() is None
        try:  # started by an earlier UI process: alive if that pid still runs this run
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return str(run_dir) in cmdline and stat.split(")")[-1].split()[0] != "Z"

    def state(self, name):
        run_dir = self.path(name)
        info = self._info(name)
        metrics = [r for r in read_metrics(run_dir) if "loss" in r]
        step, total = 0, 0
        for match in _PROGRESS.finditer(self.log_tail(name, 4000)):
            step, total = int(match.group(1)), int(match.group(2))
        if metrics:
            step = max(step, metrics[-1]["step"])
        if self._alive(info.get("pid"), run_dir):
            state = "running"
        elif info.get("stopped"):
            state = "stopped"
        elif (run_dir / HF_DIR_NAME).is_dir() and "training finished" in self.log_tail(name):
            state = "finished"
        else:
            state = "failed"
        loss = metrics[-1]["loss"] if metrics else float("nan")
        return RunState(name, state, step, total, loss)

    def metrics(self, name):
        return read_metrics(self.path(name))

    def log_tail(self, name, chars=3000):
        path = self.path(name) / LOG_FILE
        if not path.is_file():
            return ""
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - chars))
            return f.read().decode("utf-8", errors="replace")

    def artifact(self, name):
        """The run's Hugging Face artifact folder, or None before it exists."""
        path = self.path(name) / HF_DIR_NAME
        return path if path.is_dir() else None


def train_command(config, work_dir, resume=False):
    """The `xft train` command a run executes (shown in the UI as the equivalent command).

    A resume passes --force: a run stopped from the UI (SIGTERM) leaves its work-dir lock
    behind, and --force breaks only a lock whose process is gone."""
    command = [sys.executable, "-m", "xft", "train", str(config), "--work-dir", str(work_dir)]
    return command + ["--resume", "--force"] if resume else command
