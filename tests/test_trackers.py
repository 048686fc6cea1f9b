"""Trackers get the scalars of metrics.jsonl on both engines, read back from each one's
offline store: W&B's offline run file, MLflow's local file store, SwanLab's offline log."""

import glob
import importlib.util
import json

import pytest
from conftest import DEMO_CONFIG, read_metrics

from xft.config import load_config
from xft.engine.train import train
from xft.errors import ConfigError

TRACKERS = ["tensorboard", "wandb", "mlflow"]
OPTIONS = {"train.max_steps": 4, "train.log_interval": 2, "train.project": "xft-test"}


def wandb_history(work_dir):
    """The history rows of the offline run file, decoded with wandb's record protobuf."""
    from wandb.proto import wandb_internal_pb2

    (path,) = glob.glob(str(work_dir / "wandb/offline-run-*/run-*.wandb"))
    return list(history_rows(leveldb_log_records(path), wandb_internal_pb2))


# wandb 0.31 ships no reader of its run files: they are a 7-byte W&B header, then
# LevelDB's log format (32 KiB blocks of chunks, each with a 7-byte header: crc32,
# length, type FULL=1 | FIRST=2 | MIDDLE=3 | LAST=4), read here by hand.
LOG_BLOCK, CHUNK_HEADER, FULL, FIRST, LAST = 32768, 7, 1, 2, 4


def leveldb_log_records(path):
    data = open(path, "rb").read()
    assert data[:4] == b":W&B", "not a W&B run file"
    at, parts = CHUNK_HEADER, []
    while at + CHUNK_HEADER <= len(data):
        left_in_block = LOG_BLOCK - at % LOG_BLOCK
        if left_in_block < CHUNK_HEADER:  # the block's zero padding
            at += left_in_block
            continue
        length = int.from_bytes(data[at + 4:at + 6], "little")
        kind = data[at + 6]
        if kind == 0 and length == 0:  # zeros after the last record
            break
        parts.append(data[at + CHUNK_HEADER:at + CHUNK_HEADER + length])
        at += CHUNK_HEADER + length
        if kind in (FULL, LAST):
            yield b"".join(parts)
            parts = []
        else:
            assert kind in (FIRST, 3), f"bad chunk type {kind} in {path}"


def history_rows(records, wandb_internal_pb2):
    for data in records:
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
    # SwanLab needs protobuf<7, which breaks sentencepiece's model proto: it is not in the
    # test extra, and is checked where it is installed.
    swanlab = importlib.util.find_spec("swanlab") is not None
    uri = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: the file store opt-in
    monkeypatch.setenv("SWANLAB_MODE", "offline")
    work_dir = tmp_path / "run"
    options = dict(OPTIONS, **{"train.report_to": TRACKERS + ["swanlab"] * swanlab})
    train(DEMO_CONFIG, work_dir=work_dir, cfg_options=options, engine=engine)
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
        if swanlab:
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
