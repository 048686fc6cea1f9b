"""The engines xft trains on, behind one small contract, and their checkpoints.

An engine adapter hands the objects xft built (xft.engine.builder.BuiltExperiment:
model, objective, datasets, plan...) to a training framework. Each one is
described here by an `Engine`: its name (the config's `train.engine`, `xft train
--engine`), the module with its `run(built, resume=None, deepspeed=None)`, and
the layout of the checkpoints it writes into a work dir. That layout is known
here only: resume (`resolve_resume`), the engines' own writers and
xft.engine.checkpoints (which reads any engine's checkpoint for `xft convert
pth_to_hf`) all take it from this module.

    mmengine  MMEngine's Runner (xft.engine.mmengine_run)
              work_dir/iter_N.pth: MMEngine's checkpoint dict, xft's ObjectiveModel
              weights under 'state_dict' (keys 'lm.<model key>'), trained weights only
    hf        Hugging Face's Trainer (xft.engine.hf_trainer)
              work_dir/checkpoint-N/: Trainer's folder (save_pretrained output: an
              adapter or a model), complete once xft's marker file is in it

Adding an engine (docs/architecture.md): write its run module, add an `Engine`
to ENGINES with its checkpoint layout, and the CLI, config validation and the
checkpoint tools pick it up.
"""

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

from xft.engine.checkpoint_files import (complete_torch_file, newest_complete,
                                         numbered_checkpoints, pick_resume)
from xft.errors import ConfigError

# Written by the hf engine once Trainer has saved everything into a checkpoint folder:
# only folders holding it are resumed from.
HF_COMPLETE_MARKER = "xft_checkpoint_complete"
MMENGINE_LAST_CHECKPOINT = "last_checkpoint"  # MMEngine's pointer to the newest checkpoint


def _marked_complete(folder):
    return (Path(folder) / HF_COMPLETE_MARKER).is_file()


@dataclass(frozen=True)
class Engine:
    name: str
    description: str
    run_module: str  # defines run(built, resume=None, deepspeed=None) -> artifact path
    checkpoint_name: str  # e.g. 'iter_{step}.pth'
    checkpoint_pattern: re.Pattern  # matches checkpoint_name, group 1 is the step
    checkpoint_is_file: bool
    is_complete: object  # path -> bool: a whole checkpoint (not cut off by a kill)
    what: str  # how errors name one checkpoint

    def run(self, built, resume=None, deepspeed=None):
        return importlib.import_module(self.run_module).run(built, resume, deepspeed)

    def checkpoint_path(self, work_dir, step):
        return Path(work_dir) / self.checkpoint_name.format(step=step)

    def checkpoints(self, work_dir):
        """(N, path) of every checkpoint in the work dir, sorted by N, complete or not."""
        return numbered_checkpoints(work_dir, self.checkpoint_pattern)

    def newest_complete(self, work_dir, log=print):
        """The complete checkpoint with the highest N, or None (judged by content, not by
        any pointer file a non-atomic writer may have left)."""
        return newest_complete(self.checkpoints(work_dir), self.is_complete, log)

    def resolve_resume(self, resume, work_dir):
        """None (resume is None/False), or the checkpoint to resume from: the newest
        complete one (resume=True) or the given path; an error when there is none."""
        return pick_resume(resume, work_dir, self.checkpoints(work_dir), self.is_complete,
                           self.what)

    def owns(self, path):
        """Whether `path` has this engine's checkpoint layout."""
        path = Path(path)
        return (path.is_file() == self.checkpoint_is_file
                and self.checkpoint_pattern.match(path.name) is not None)


ENGINES = {engine.name: engine for engine in [
    Engine("mmengine", "MMEngine's Runner", "xft.engine.mmengine_run", "iter_{step}.pth",
           re.compile(r"^iter_(\d+)\.pth$"), True, complete_torch_file,
           "iter_N.pth checkpoint"),
    Engine("hf", "Hugging Face's Trainer", "xft.engine.hf_trainer", "checkpoint-{step}",
           re.compile(r"^checkpoint-(\d+)$"), False, _marked_complete,
           "checkpoint-N folder"),
]}


def get_engine(name):
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r} (known: {', '.join(ENGINES)})")
    return ENGINES[name]

