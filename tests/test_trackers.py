"""Trackers get the scalars of metrics.jsonl on both engines, read back from each one's
offline store: W&B's offline run file, MLflow's local file store, SwanLab's offline log."""

import glob
import json

import pytest
from conftest import DEMO_CONFIG, read_metrics

from xft.config import load_config
from xft.engine.train import train
from xft.errors import ConfigError

OPTIONS = {"train.max_steps": 4, "train.log_interval": 2,
           "train.report_to": ["tensorboard", "wandb", "mlflow", "swanlab"],
           "train.project": "xft-test"}


def wandb_history(work_dir):
    """The history rows of the offline run file: records framed as wandb writes them (read
    by SwanLab's W&B importer, wandb 0.31 has no reader of its own), decoded with wandb's
    record protobuf."""
    from swanlab.converter.wb.wbdatastore import WBDataStoreReader
    from wandb.proto import wandb_internal_pb2

    (path,) = glob.glob(str(work_dir / "wandb/offline-run-*/run-*.wandb"))
    rows = []
    with WBDataStoreReader() as store:
        store.open(path)
        rows = list(history_rows(store, wandb_internal_pb2))
    return rows


def history_rows(store, wandb_internal_pb2):
    while (data := store.scan()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            yield {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for item in record.history.item}


def mlflow_history(uri, key):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("xft-test").experiment_id])
    return {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}


def swanlab_history(work_dir, key):
    from swanlab.proto.swanlab.record.v1 import record_pb2
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    (path,) = glob.glob(str(work_dir / "swanlog/run-*/*.swanlab"))
    reader = DataStoreReader()
    reader.open(path)
    found = {}
    while (data := reader.scan()) is not None:
        record = record_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "scalar" and record.scalar.key == key:
            found[record.scalar.step] = record.scalar.value.number
    reader.close()
    return found


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["mmengine", "hf"])
def test_every_tracker_gets_the_metrics_of_metrics_jsonl(engine, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    pytest.importorskip("swanlab")
    uri = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: the file store opt-in
    monkeypatch.setenv("SWANLAB_MODE", "offline")
    work_dir = tmp_path / "run"
    train(DEMO_CONFIG, work_dir=work_dir, cfg_options=OPTIONS, engine=engine)
    records = read_metrics(work_dir)
    assert [r["step"] for r in records] == [2, 4]
    keys = [k for k in records[0] if k != "step"]
    assert {"loss", "lr", "grad_norm", "tokens", "label_tokens", "tokens_per_s"} <= set(keys)
    expected = {f"train/{k}": {r["step"]: r[k] for r in records} for k in keys}

    rows = wandb_history(work_dir)
    for name, by_step in expected.items():
        assert {row["_step"]: row[name] for row in rows if name in row} == pytest.approx(by_step)
    for name in ("train/loss", "train/lr", "train/label_tokens"):
        assert mlflow_history(uri, name) == pytest.approx(expected[name])
        assert swanlab_history(work_dir, name) == pytest.approx(expected[name])


def test_a_tracker_without_its_library_fails_before_building(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"'train.report_to' lists 'wandb', which needs its "
                                          r"library: pip install wandb"):
        train(DEMO_CONFIG, cfg_options={"train.report_to": ["wandb"]})


def test_unknown_tracker_is_refused():
    with pytest.raises(ConfigError, match=r"'train.report_to\[0\]' must be one of .*did you "
                                          r"mean 'wandb'"):
        load_config(DEMO_CONFIG, {"train.report_to": ["wanb"]})
