"""Experiment trackers: the scalars of metrics.jsonl, sent through each tracker's own library.

`train.report_to` lists them: `tensorboard` (work_dir/tensorboard), `wandb`, `mlflow`,
`swanlab`. The monitor (xft.engine.monitor) hands every record to `Trackers.log` on
rank 0, so both engines report the same values at the same steps. Where a run goes
(online, offline, a server) is each library's own setting, from its environment
variables: WANDB_MODE=offline, MLFLOW_TRACKING_URI (MLflow's default is a
sqlite:///mlflow.db in the current folder), SWANLAB_MODE=offline/local.
"""

import dataclasses
import json
from pathlib import Path

from xft.errors import ConfigError

TENSORBOARD_DIR = "tensorboard"
TRACKERS = ("tensorboard", "wandb", "mlflow", "swanlab")


class TensorBoard:
    def __init__(self, work_dir, project, name, config):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(work_dir) / TENSORBOARD_DIR))

    def log(self, scalars, step):
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self):
        self.writer.close()


class WandB:
    def __init__(self, work_dir, project, name, config):
        import wandb

        self.run = wandb.init(project=project, name=name, dir=str(work_dir), config=config)

    def log(self, scalars, step):
        self.run.log(scalars, step=step)

    def close(self):
        self.run.finish()


class MLflow:
    def __init__(self, work_dir, project, name, config):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_experiment(project)
        self.run = mlflow.start_run(run_name=name)
        mlflow.log_dict(config, "xft_config.json")

    def log(self, scalars, step):
        self.mlflow.log_metrics(scalars, step=step)

    def close(self):
        self.mlflow.end_run()


class SwanLab:
    def __init__(self, work_dir, project, name, config):
        import swanlab

        self.swanlab = swanlab
        self.run = swanlab.init(project=project, name=name, config=config,
                                log_dir=str(Path(work_dir) / "swanlog"))

    def log(self, scalars, step):
        self.swanlab.log(scalars, step=step)

    def close(self):
        self.swanlab.finish()


KINDS = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow, "swanlab": SwanLab}
PACKAGES = {"wandb": "wandb", "mlflow": "mlflow-skinny", "swanlab": "swanlab"}


class Trackers:
    """The run's trackers; `log` sends one record's scalars to each."""

    def __init__(self, names, work_dir, project, experiment):
        name = Path(work_dir).resolve().name
        config = plain(dataclasses.asdict(experiment)) if experiment is not None else {}
        check_installed(names)
        self.open = []
        try:
            for kind in names:
                self.open.append(KINDS[kind](work_dir, project, name, config))
        except BaseException:
            self.close()
            raise

    def log(self, scalars, step):
        for tracker in self.open:
            tracker.log(scalars, step)

    def close(self):
        for tracker in self.open:
            tracker.close()
        self.open = []


def check_installed(names):
    """Fail before anything is built when a tracker's library is missing."""
    import importlib.util

    for kind in names:
        if kind in PACKAGES and importlib.util.find_spec(kind) is None:
            raise ConfigError(f"'train.report_to' lists {kind!r}, which needs its library: "
                              f"pip install {PACKAGES[kind]} (or xft's "
                              f"'{'swanlab' if kind == 'swanlab' else 'trackers'}' extra)")


def plain(value):
    """The experiment as JSON values (a format map function becomes its name)."""
    return json.loads(json.dumps(value, default=lambda v: getattr(v, "__name__", repr(v))))
