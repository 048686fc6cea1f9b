"""The web UI's form and runs, without a browser: fields of a shipped config, validation
messages, the run config (inherits the chosen config, sets the form's fields), and a run as a
detached process: stopped, resumed from its checkpoint, its state read from the work dir."""

import dataclasses
import re
import time

import pytest
from conftest import DEMO_CONFIG

from xft.config import load_config
from xft.config.loader import load_raw_config
from xft.errors import XftError
from xft.webui.form import form_of, resolve, run_config_text
from xft.webui.runs import RunStore


def test_the_form_shows_a_shipped_configs_fields():
    form = form_of(DEMO_CONFIG)
    _, experiment = load_config(DEMO_CONFIG)
    assert form.model_path == experiment.model.path == "xft://tiny-llama"
    assert (form.template, form.dataset_format, form.method) == ("chatml", "alpaca", "lora")
    assert (form.lr, form.epochs, form.max_length) == (experiment.optim.lr,
                                                       experiment.train.epochs,
                                                       experiment.data.max_length)


@pytest.mark.parametrize("change, message", [
    (dict(lr=-1.0), "learning rate: must be above 0"),
    (dict(epochs=0), "epochs: must be at least 1"),
    (dict(max_length=None), "max length: must be at least 8"),
    (dict(dataset_path="missing/data.json"), "dataset path: missing/data.json does not exist"),
    (dict(model_path=" "), "model path: required"),
    (dict(method="qlora"), "'method.type' must be one of ['full', 'lora', 'freeze']"),
    (dict(template="no_such_template"), "unknown chat template 'no_such_template'"),
    (dict(dataset_format="alpacca"), "unknown dataset format 'alpacca'; did you mean 'alpaca'"),
])
def test_bad_fields_are_reported_in_one_line(change, message):
    form = dataclasses.replace(form_of(DEMO_CONFIG), **change)
    with pytest.raises(XftError) as error:
        resolve(DEMO_CONFIG, form)
    assert message in str(error.value)
    assert "/tmp" not in str(error.value)  # the preview's temporary file is not the user's


def test_the_run_config_is_the_chosen_config_plus_the_form(tmp_path):
    form = dataclasses.replace(form_of(DEMO_CONFIG), lr=1e-3, epochs=2, max_length=128,
                               method="full")
    path = tmp_path / "config.py"
    path.write_text(run_config_text(DEMO_CONFIG, form))
    edited = load_raw_config(path).to_dict()
    expected = load_raw_config(DEMO_CONFIG).to_dict()
    expected["optim"]["lr"], expected["train"]["epochs"] = 1e-3, 2
    expected["data"]["max_length"], expected["method"]["type"] = 128, "full"
    for key in ("model", "template", "datasets", "method", "optim", "train", "data"):
        assert edited[key] == expected[key], key


def progress_steps(text):
    return [int(step) for step in re.findall(r"step (\d+)/\d+", text)]


def wait_until(condition, timeout, what):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.slow
def test_a_run_is_detached_stops_and_resumes_from_its_checkpoint(tmp_path):
    form = dataclasses.replace(form_of(DEMO_CONFIG), save_interval=4, log_interval=2)
    store = RunStore(tmp_path / "runs")
    store.launch("r1", run_config_text(DEMO_CONFIG, form))
    with pytest.raises(XftError, match="exists already"):
        store.launch("r1", run_config_text(DEMO_CONFIG, form))
    assert store.names() == ["r1"] and store.state("r1").state == "running"
    work_dir = store.path("r1")
    wait_until(lambda: (work_dir / "iter_4.pth").is_file(), 600, "the first checkpoint")
    store.stop("r1")
    wait_until(lambda: store.state("r1").state == "stopped", 60, "the stop")
    # A new store (a restarted UI) reads the same state from the work dir.
    assert RunStore(tmp_path / "runs").state("r1").state == "stopped"
    newest = max(int(p.stem.split("_")[1]) for p in work_dir.glob("iter_*.pth"))
    log_before = len(store.log_tail("r1", 10**7))

    store.resume("r1")
    assert store.state("r1").state == "running"
    wait_until(lambda: progress_steps(store.log_tail("r1", 10**7)[log_before:]), 600,
               "progress after the resume")
    assert progress_steps(store.log_tail("r1", 10**7)[log_before:])[0] == newest + 2
    store.stop("r1")
    wait_until(lambda: store.state("r1").state == "stopped", 60, "the second stop")
    assert all(r["step"] <= store.state("r1").step for r in store.metrics("r1"))
