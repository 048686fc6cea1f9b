"""The web UI's training form: a config's common fields, checked, written as a run config.

The run's config file inherits the chosen config (`_base_`) and sets only the
edited fields, so the resolved config is the chosen one plus what the form
shows, and `xft train config.py` reproduces the run without the UI.
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path

from xft.config import load_config
from xft.config.loader import config_text, find_config, load_raw_config
from xft.data.formats import get_format
from xft.data.templates import template_spec
from xft.errors import ConfigError, XftError
from xft.paths import resolve_path


@dataclass
class Form:
    """The editable fields (the first dataset's path and format; other datasets are kept)."""

    model_path: str
    template: str
    dataset_path: str
    dataset_format: str
    method: str
    lr: float
    epochs: int
    max_length: int
    save_interval: int
    log_interval: int


def form_of(config):
    """The form's values in a config (a shipped name or a file)."""
    _, experiment = load_config(config)
    first = experiment.datasets[0]
    if callable(first.format):
        raise XftError(f"{config}: its first dataset's format is a function; the web UI edits "
                       "configs whose formats are names (edit this one as a file)")
    return Form(experiment.model.path, experiment.template, first.path, first.format,
                experiment.method.type, experiment.optim.lr, experiment.train.epochs,
                experiment.data.max_length, experiment.train.save_interval,
                experiment.train.log_interval)


def check_form(form):
    """Problems a user can fix in the form, one line each (empty: fine)."""
    problems = []
    for label, value, low in (("learning rate", form.lr, 0), ("epochs", form.epochs, 1),
                              ("max length", form.max_length, 8),
                              ("checkpoint every", form.save_interval, 1),
                              ("log every", form.log_interval, 1)):
        if value is None or value < low or (low == 0 and value == 0):
            problems.append(f"{label}: must be {'above' if low == 0 else 'at least'} {low}, "
                            f"got {value}")
    for label, value in (("model path", form.model_path), ("dataset path", form.dataset_path)):
        if not value or not str(value).strip():
            problems.append(f"{label}: required")
        elif _looks_local(value) and not Path(resolve_path(value)).exists():
            problems.append(f"{label}: {value} does not exist")
    for check, value in ((template_spec, form.template), (get_format, form.dataset_format)):
        try:
            check(value)
        except ConfigError as e:
            problems.append(str(e))
    return problems


def _looks_local(path):
    return path.startswith(("/", ".", "~", "xft://")) or Path(path).suffix in (
        ".json", ".jsonl", ".csv", ".parquet")


def run_config_text(config, form):
    """The text of a run config: the chosen config as `_base_`, plus the form's values."""
    base = find_config(config).resolve()
    datasets = load_raw_config(base).to_dict()["datasets"]
    datasets[0] = dict(datasets[0], path=form.dataset_path, format=form.dataset_format)
    lines = [
        "# Written by `xft webui`: the config below, plus the fields set in the form.",
        f"_base_ = [{str(base)!r}]",
        f"model = dict(path={form.model_path!r})",
        f"template = {form.template!r}",
        f"datasets = {datasets!r}",
        f"method = dict(type={form.method!r})",
        f"optim = dict(lr={float(form.lr)!r})",
        f"train = dict(epochs={int(form.epochs)}, save_interval={int(form.save_interval)}, "
        f"log_interval={int(form.log_interval)})",
        f"data = dict(max_length={int(form.max_length)})",
    ]
    return "\n".join(lines) + "\n"


def resolve(config, form):
    """(run config text, resolved config text) or XftError naming the problem."""
    problems = check_form(form)
    if problems:
        raise XftError("; ".join(problems))
    text = run_config_text(config, form)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.py"
        path.write_text(text, encoding="utf-8")
        try:  # the schema's own checks (types, ranges, combinations)
            cfg, _ = load_config(path)
        except ConfigError as e:
            raise ConfigError(str(e).replace(f"{path}: ", "")) from None
        resolved = config_text(cfg)
    return text, resolved
