"""Several processes (torchrun, gloo on CPU): the same training as one process with a
bigger micro-batch, on both engines; the launcher's settings and exit codes."""

import json

import pytest
import torch
from conftest import DEMO_CONFIG, run_cli, write_config, read_metrics
from safetensors.torch import load_file

from xft.data.sampler import RunBatchSampler
from xft.engine.launch import launch_settings, torchrun_arguments, without_option
from xft.engine.train import train
from xft.errors import XftError

ENGINES = ["mmengine", "hf"]
STEPS = 4
# Dropout off: each rank draws its own masks, so only a deterministic run can match.
COMMON = {"train.max_steps": STEPS, "train.grad_accum": 2, "train.log_interval": 1,
          "train.save_interval": 100, "method.dropout": 0.0}


def options(batch_size):
    return {**COMMON, "train.batch_size": batch_size}


def cli_options(opts):
    return ["--cfg-options", *[f"{k}={v}" for k, v in opts.items()]]


# --- the data each rank sees ------------------------------------------------------------

def test_two_ranks_see_per_micro_step_what_one_process_sees_with_double_micro_batch():
    single = list(RunBatchSampler(45, 2, 30, seed=3))  # 30 micro-batches cross an epoch end
    ranks = [list(RunBatchSampler(45, 1, 30, seed=3, world_size=2, rank=r)) for r in (0, 1)]
    for step, (both, r0, r1) in enumerate(zip(single, *ranks)):
        if len(both) == 2:
            assert r0 + r1 == both, step
        else:  # the epoch's last sample alone: rank 1 gets the epoch's first sample again
            assert r0 == both and r1 == single[0][:1], step
    assert all(len(b) == 1 for r in ranks for b in r)


def test_the_unsharded_stream_interleaves_the_ranks_batches():
    stream = list(RunBatchSampler(10, 2, 3, seed=0, world_size=2))
    ranks = [list(RunBatchSampler(10, 2, 3, seed=0, world_size=2, rank=r)) for r in (0, 1)]
    assert len(stream) == 6 == len(RunBatchSampler(10, 2, 3, world_size=2))
    assert stream[0::2] == ranks[0] and stream[1::2] == ranks[1]  # what Accelerate hands out


# --- launcher settings ------------------------------------------------------------------

@pytest.mark.slow
def test_launch_settings_follow_xtuner_environment_and_nproc_overrides():
    assert launch_settings(None, {}) is None  # a plain run
    assert launch_settings(1, {"NPROC_PER_NODE": "4"}) is None  # --nproc wins
    local = launch_settings(None, {"NPROC_PER_NODE": "2"})
    assert torchrun_arguments(local, ["train", "c.py"]) == [
        "--nproc-per-node", "2", "--standalone", "--module", "xft", "train", "c.py"]
    multi = launch_settings(4, {"NNODES": "2", "NODE_RANK": "1", "ADDR": "10.0.0.1"})
    args = torchrun_arguments(multi, ["train", "c.py"])
    assert args[:10] == ["--nproc-per-node", "4", "--nnodes", "2", "--node-rank", "1",
                         "--master-addr", "10.0.0.1", "--master-port", "29500"]
    # Inside a worker the same environment must not launch again.
    assert launch_settings(2, {"RANK": "0", "WORLD_SIZE": "2"}) is None
    with pytest.raises(XftError, match="NODE_RANK"):
        launch_settings(None, {"NPROC_PER_NODE": "x"})
    with pytest.raises(XftError, match="node rank 2"):
        launch_settings(None, {"NNODES": "2", "NODE_RANK": "2"})


@pytest.mark.slow
def test_workers_get_the_command_without_nproc():
    argv = ["train", "c.py", "--nproc", "2", "--seed", "1", "--nproc=3", "--debug"]
    assert without_option(argv, "--nproc") == ["train", "c.py", "--seed", "1", "--debug"]


# --- DeepSpeed config: "auto" and conflicts ------------------------------------------------

def experiment(**train):
    from xft.config import load_config

    return load_config(DEMO_CONFIG, {f"train.{k}": v for k, v in train.items()})[1]


def test_shipped_deepspeed_configs_get_their_auto_values_from_the_config():
    from xft.engine.deepspeed_config import SHIPPED, resolve_deepspeed_config

    exp = experiment(batch_size=3, grad_accum=4)
    for name in SHIPPED:
        warnings = []
        ds = resolve_deepspeed_config(name, exp, world_size=2, warn=warnings.append)
        assert warnings == []
        assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"],
                ds["train_batch_size"]) == (3, 4, 24)
        assert ds["gradient_clipping"] == exp.optim.max_grad_norm
        assert ds["bf16"]["enabled"] is False and ds["fp16"]["enabled"] is False  # float32
        assert "auto" not in json.dumps(ds)
        assert ds["zero_optimization"]["stage"] == int(name[4])


def test_explicit_deepspeed_values_that_conflict_are_replaced_with_a_warning(tmp_path):
    from xft.engine.deepspeed_config import resolve_deepspeed_config

    path = tmp_path / "mine.json"
    path.write_text(json.dumps({
        "train_micro_batch_size_per_gpu": 16, "gradient_accumulation_steps": 2,
        "bf16": {"enabled": True}, "optimizer": {"type": "Adam"},
        "zero_optimization": {"stage": 2, "reduce_bucket_size": 5e8}}))
    warnings = []
    ds = resolve_deepspeed_config(str(path), experiment(batch_size=1, grad_accum=2),
                                  world_size=1, warn=warnings.append)
    assert ds["train_micro_batch_size_per_gpu"] == 1 and ds["bf16"]["enabled"] is False
    assert "optimizer" not in ds and ds["zero_optimization"]["reduce_bucket_size"] == 5e8
    text = "\n".join(warnings)
    assert "'train_micro_batch_size_per_gpu' is 16 but the config gives 1" in text
    assert "'bf16.enabled' is True" in text and "'optimizer' section" in text
    assert "gradient_accumulation_steps" not in text  # it agrees: no warning
    assert all(str(path) in w for w in warnings)


def test_bad_deepspeed_choices_fail_with_file_and_suggestion(tmp_path):
    from xft.engine.deepspeed_config import resolve_deepspeed_config
    from xft.errors import ConfigError

    exp = experiment()
    with pytest.raises(ConfigError, match="did you mean 'zero2'"):
        resolve_deepspeed_config("zero_2", exp)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json: not valid JSON"):
        resolve_deepspeed_config(str(bad), exp)


# --- 2 processes × micro-batch 1 == 1 process × micro-batch 2 -----------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    out = {}
    for engine in ENGINES:
        single, double = root / f"{engine}-1proc", root / f"{engine}-2proc"
        train(DEMO_CONFIG, work_dir=single, cfg_options=options(2), engine=engine)
        run_cli("train", DEMO_CONFIG, "--engine", engine, "--work-dir", str(double),
                "--nproc", "2", *cli_options(options(1)))
        out[engine] = single, double
    return out


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_two_processes_train_like_one_with_the_global_batch(runs, engine):
    single, double = runs[engine]
    one, two = read_metrics(single), read_metrics(double)
    assert [r["step"] for r in two] == list(range(1, STEPS + 1))
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), a["step"]
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4), a["step"]
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-6, abs=1e-12)
    assert two[-1]["loss"] < two[0]["loss"]
    a, b = (load_file(d / "hf/adapter_model.safetensors") for d in (single, double))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5)
    assert max(t.abs().max() for k, t in b.items() if "lora_B" in k) > 1e-3  # it trained
    # Rank 0 alone writes: one record per step, one artifact.
    assert len(two) == STEPS and (double / "hf/adapter_config.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_two_process_resume_ends_with_the_uninterrupted_weights(engine, tmp_path):
    """Checkpoint at step 2 of a 2-process run; a new 2-process run resumed from it
    logs the same steps 3-4 and ends with the same adapter, to the bit."""
    import shutil

    full, resumed = tmp_path / "full", tmp_path / "resumed"
    opts = cli_options({**options(1), "train.save_interval": 2})
    run_cli("train", DEMO_CONFIG, "--engine", engine, "--work-dir", str(full), "--nproc", "2",
            *opts)
    name = "iter_2.pth" if engine == "mmengine" else "checkpoint-2"
    resumed.mkdir()
    (shutil.copy if engine == "mmengine" else shutil.copytree)(full / name, resumed / name)
    run_cli("train", DEMO_CONFIG, "--engine", engine, "--work-dir", str(resumed),
            "--nproc", "2", "--resume", *opts)
    assert [(r["step"], r["loss"]) for r in read_metrics(resumed)] == \
        [(r["step"], r["loss"]) for r in read_metrics(full)][2:]
    expected, got = (load_file(d / "hf/adapter_model.safetensors") for d in (full, resumed))
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


# Rank 1 exits with code 3 while its config is read (MMEngine executes config files).
# No import statement: MMEngine would read a config holding one as a lazy-import config.
FAILING = """
if __import__("os").environ.get("RANK") == "1":
    raise SystemExit(3)
model = dict(path='xft://tiny-llama')
template = 'chatml'
datasets = [dict(path='xft://data/self_cognition.json')]
train = dict(max_steps=2)
"""


@pytest.mark.slow
def test_a_failing_worker_fails_the_command_with_its_exit_code(tmp_path):
    config = write_config(tmp_path, FAILING)
    result = run_cli("train", str(config), "--work-dir", str(tmp_path / "w"), "--nproc", "2",
                     check=False)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "worker rank 1 exited with code 3" in result.stderr


# --- DeepSpeed ZeRO (2 processes, CPU) ----------------------------------------------------

@pytest.fixture(scope="module")
def torch_extensions():
    """DeepSpeed compiles a shared-memory op on its first run (about a minute); a
    persistent folder lets later test runs reuse it."""
    import os
    from pathlib import Path

    path = Path(os.environ.get("TORCH_EXTENSIONS_DIR",
                               Path.home() / ".cache" / "xft-torch-extensions"))
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_deepspeed_zero_trains_like_data_parallel(runs, engine, stage, tmp_path,
                                                   torch_extensions, monkeypatch):
    """Same data, same fp32 arithmetic up to reduction order: ZeRO's losses and weights
    follow the plain 2-process run; the exported adapter (gathered under ZeRO-3) loads
    with stock peft."""
    pytest.importorskip("deepspeed")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from xft.paths import resolve_path

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", torch_extensions)
    work_dir = tmp_path / "w"
    run_cli("train", DEMO_CONFIG, "--engine", engine, "--work-dir", str(work_dir),
            "--nproc", "2", "--deepspeed", f"zero{stage}", *cli_options(options(1)))
    _, ddp = runs[engine]
    expected, got = read_metrics(ddp), read_metrics(work_dir)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    for a, b in zip(expected, got):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), a["step"]
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-6, abs=1e-12)
    assert got[-1]["loss"] < got[0]["loss"] / 1.5
    reference = load_file(ddp / "hf/adapter_model.safetensors")
    exported = load_file(work_dir / "hf/adapter_model.safetensors")
    assert exported.keys() == reference.keys()
    for name, tensor in reference.items():
        assert exported[name].shape == tensor.shape and exported[name].numel() > 0
        torch.testing.assert_close(exported[name], tensor, rtol=0, atol=1e-4)
    base = AutoModelForCausalLM.from_pretrained(resolve_path("xft://tiny-llama"))
    PeftModel.from_pretrained(base, str(work_dir / "hf"))  # loads with stock peft


# --- GPU only (not run in CPU CI) ----------------------------------------------------------

def gpu_processes():
    return max(1, min(2, torch.cuda.device_count()))


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("preset", ["zero2_offload", "zero3_offload"])
def test_deepspeed_offload_trains_and_exports_on_gpu(engine, preset, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from xft.paths import resolve_path

    work_dir = tmp_path / "w"
    run_cli("train", DEMO_CONFIG, "--engine", engine, "--work-dir", str(work_dir),
            "--nproc", str(gpu_processes()), "--deepspeed", preset,
            *cli_options({**options(2), "train.max_steps": 20}))
    records = read_metrics(work_dir)
    assert all(r["loss"] == r["loss"] for r in records)  # finite, not NaN
    assert records[-1]["loss"] < records[0]["loss"] / 1.5
    exported = load_file(work_dir / "hf/adapter_model.safetensors")
    assert exported and all(t.numel() > 0 for t in exported.values())
    base = AutoModelForCausalLM.from_pretrained(resolve_path("xft://tiny-llama"))
    PeftModel.from_pretrained(base, str(work_dir / "hf"))


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.parametrize("engine", ENGINES)
def test_qlora_with_zero3_trains_and_exports_a_complete_adapter_on_gpu(engine, tmp_path):
    work_dir = tmp_path / "w"
    qlora = {**options(2), "train.max_steps": 20, "model.quantization.bits": 4,
             "model.dtype": "bfloat16"}
    run_cli("train", DEMO_CONFIG, "--engine", engine, "--work-dir", str(work_dir),
            "--nproc", str(gpu_processes()), "--deepspeed", "zero3", *cli_options(qlora))
    records = read_metrics(work_dir)
    assert records[-1]["loss"] < records[0]["loss"]
    exported = load_file(work_dir / "hf/adapter_model.safetensors")
    assert any("lora_B" in k for k in exported)
    assert all(t.numel() > 0 for t in exported.values())


def test_two_ranks_storing_the_same_dataset_cache_entry_do_not_fail(tmp_path, monkeypatch):
    """Both ranks encode on a first run; the one that renames second must not crash."""
    import os

    from xft.data import cache

    samples = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}]
    real_replace = os.replace

    def other_rank_first(src, dst):  # the other rank's entry lands between check and rename
        monkeypatch.setattr(cache.os, "replace", real_replace)
        cache.save(tmp_path, "k", {"who": "other"}, samples, {"n": 1}, ("input_ids", "labels"))
        return real_replace(src, dst)

    monkeypatch.setattr(cache.os, "replace", other_rank_first)
    entry = cache.save(tmp_path, "k", {"who": "me"}, samples, {"n": 1}, ("input_ids", "labels"))
    assert json.loads((entry / "key.json").read_text()) == {"who": "other"}
    assert cache.load(tmp_path, "k", ("input_ids", "labels")) is not None
    assert [p.name for p in (tmp_path / "datasets").iterdir()] == ["k"]  # no temp folder left
