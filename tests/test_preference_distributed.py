"""Preference training across processes and runs (torchrun, gloo on CPU), both engines:

- 2 processes × 1 pair per micro-batch log the same losses and pair metrics as 1 process
  × 2 pairs, and end with the same adapter (the step's loss is normalised per pair over
  ranks as well as over gradient accumulation);
- a DPO run resumed from its step-2 checkpoint logs the uninterrupted run's steps 3-4 and
  ends with its adapter, to the bit (the reference is rebuilt, not checkpointed).
"""

import shutil

import pytest
import torch
from conftest import read_metrics, run_cli
from safetensors.torch import load_file

from xft.engine.train import train

DPO_CONFIG = "tiny_llama_lora_dpo_self_cognition"
ENGINES = ["mmengine", "hf"]
STEPS = 4
PAIR_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected")
# Dropout off: each rank draws its own masks, so only a deterministic run can match.
COMMON = {"data.test_size": None, "train.save_best": None, "train.export_best": False,
          "train.eval_interval": None, "train.log_interval": 1, "train.max_steps": STEPS,
          "train.grad_accum": 2, "train.save_interval": 100, "method.dropout": 0.0}


def cli_options(opts):
    return ["--cfg-options", *[f"{k}={v}" for k, v in opts.items()]]


def assert_same_adapter(a_dir, b_dir, atol):
    a, b = (load_file(d / "hf/adapter_model.safetensors") for d in (a_dir, b_dir))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=atol)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_two_processes_train_dpo_like_one_with_the_global_batch(engine, tmp_path):
    single, double = tmp_path / "1proc", tmp_path / "2proc"
    train(DPO_CONFIG, work_dir=single, cfg_options={**COMMON, "train.batch_size": 2},
          engine=engine)
    run_cli("train", DPO_CONFIG, "--engine", engine, "--work-dir", str(double), "--nproc", "2",
            *cli_options({**COMMON, "train.batch_size": 1}))
    one, two = read_metrics(single), read_metrics(double)
    assert [r["step"] for r in two] == list(range(1, STEPS + 1))
    for a, b in zip(one, two):
        # The record's count is rank 0's share (xft.engine.monitor counts what a rank ran).
        assert a["pairs"] == 2 * b["pairs"] == 4
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), a["step"]
        for name in PAIR_METRICS:
            assert b[name] == pytest.approx(a[name], rel=1e-4, abs=1e-6), (a["step"], name)
    assert two[-1]["loss"] < two[0]["loss"]
    assert_same_adapter(single, double, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_resumed_dpo_run_ends_with_the_uninterrupted_weights(engine, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    opts = {**COMMON, "train.batch_size": 2, "train.save_interval": 2, "train.engine": engine}
    train(DPO_CONFIG, work_dir=full, cfg_options=opts)
    name = "iter_2.pth" if engine == "mmengine" else "checkpoint-2"
    resumed.mkdir()
    (shutil.copy if engine == "mmengine" else shutil.copytree)(full / name, resumed / name)
    train(DPO_CONFIG, work_dir=resumed, cfg_options=opts, resume=True)
    keys = ("step", "loss") + PAIR_METRICS
    assert [tuple(r[k] for k in keys) for r in read_metrics(resumed)] == \
        [tuple(r[k] for k in keys) for r in read_metrics(full)][2:]
    assert_same_adapter(full, resumed, atol=0)
