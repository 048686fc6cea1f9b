"""Checkpoints survive kills: atomic writing, resume from the newest complete one, SIGKILL."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import DEMO_CONFIG, REPO, run_cli, read_metrics
from safetensors.torch import load_file

from xft.engine.engines import HF_COMPLETE_MARKER as COMPLETE_MARKER, get_engine
from xft.engine.train import train

ENGINES = ["mmengine", "hf"]


def adapter(work_dir):
    return load_file(work_dir / "hf/adapter_model.safetensors")


def assert_same_weights(actual, expected):
    assert actual.keys() == expected.keys() and any("lora_B" in k for k in expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0)


def checkpoint_name(engine, step):
    return f"iter_{step}.pth" if engine == "mmengine" else f"checkpoint-{step}"


def complete_checkpoints(engine, work_dir):
    """Steps of the checkpoints this engine's writer has finished."""
    if engine == "mmengine":  # written as .tmp and renamed: the name means complete
        paths = work_dir.glob("iter_*.pth")
        return sorted(int(p.stem.split("_")[1]) for p in paths)
    return sorted(int(p.parent.name.split("-")[1])
                  for p in work_dir.glob(f"checkpoint-*/{COMPLETE_MARKER}"))


@pytest.mark.slow
def test_a_kill_while_saving_keeps_the_previous_checkpoint_loadable(tmp_path):
    """SIGKILL in the middle of XftCheckpointHook's write, with max_keep=1.

    MMEngine's own hook deletes the oldest checkpoint before writing the new one
    and writes in place, which here would leave a truncated iter_4.pth and no
    complete checkpoint at all.
    """
    torch.save({"step": 2}, tmp_path / "iter_2.pth")
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_2.pth"))
    script = textwrap.dedent(f"""
        import os, signal
        from types import SimpleNamespace
        import torch
        from xft.engine.mmengine_hooks import CheckpointHook

        def save_partly_then_die(obj, f):  # torch.save, killed in the middle
            f.write(b"PK" + b"x" * 100000)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = save_partly_then_die
        hook = CheckpointHook(interval=2, max_keep=1)

        def save_checkpoint(out_dir, filename, **kwargs):  # the Runner's: it calls the hook
            hook.before_save_checkpoint(runner, {{"step": 4}})

        runner = SimpleNamespace(work_dir={str(tmp_path)!r}, iter=3, max_iters=10,
                                 save_checkpoint=save_checkpoint)
        hook.after_train_iter(runner, 3)
    """)
    result = subprocess.run([sys.executable, "-c", script], env=dict(os.environ,
                            PYTHONPATH=str(REPO)), capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert (tmp_path / "iter_4.pth.tmp").stat().st_size > 100000  # it was killed mid-write
    assert not (tmp_path / "iter_4.pth").exists()
    assert (tmp_path / "last_checkpoint").read_text() == str(tmp_path / "iter_2.pth")
    assert torch.load(tmp_path / "iter_2.pth") == {"step": 2}
    assert get_engine("mmengine").newest_complete(tmp_path) == str(tmp_path / "iter_2.pth")


RESUME_OPTIONS = {"train.max_steps": 6, "train.save_interval": 2, "train.save_total_limit": 3,
                  "train.log_interval": 1, "train.grad_accum": 2, "train.batch_size": 2}


def cut_off(engine, full_dir, work_dir, step):
    """Leave in work_dir what a kill while saving checkpoint `step` can leave."""
    if engine == "mmengine":
        # As MMEngine's own (non-atomic) hook would leave it: a truncated file, named in
        # last_checkpoint; and a partial temporary file, as xft's hook would leave it.
        data = (full_dir / f"iter_{step}.pth").read_bytes()
        (work_dir / f"iter_{step}.pth").write_bytes(data[:len(data) // 2])
        (work_dir / "last_checkpoint").write_text(str(work_dir / f"iter_{step}.pth"))
        (work_dir / f"iter_{step + 2}.pth.tmp").write_bytes(data[:1000])
    else:
        # Every file written, trainer_state.json cut off, no completion marker.
        folder = work_dir / f"checkpoint-{step}"
        shutil.copytree(full_dir / f"checkpoint-{step}", folder)
        (folder / COMPLETE_MARKER).unlink()
        state = (folder / "trainer_state.json").read_text()
        (folder / "trainer_state.json").write_text(state[:len(state) // 2])


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_resume_passes_over_a_checkpoint_cut_off_while_written(engine, tmp_path):
    full_dir, work_dir = tmp_path / "full", tmp_path / "resumed"
    train(DEMO_CONFIG, work_dir=full_dir, cfg_options=RESUME_OPTIONS, engine=engine)
    assert complete_checkpoints(engine, full_dir) == [2, 4, 6]
    work_dir.mkdir()
    name = checkpoint_name(engine, 2)
    copy = shutil.copy if engine == "mmengine" else shutil.copytree
    copy(full_dir / name, work_dir / name)
    cut_off(engine, full_dir, work_dir, 4)

    result = run_cli("train", DEMO_CONFIG, "--engine", engine, "--work-dir", str(work_dir),
                     "--resume", "--cfg-options",
                     *[f"{k}={v}" for k, v in RESUME_OPTIONS.items()])
    assert f"passing over {work_dir / checkpoint_name(engine, 4)}" in result.stdout
    # Both engines say where they resume from (xft.engine.resume_check).
    assert f"resuming from {work_dir / name} (step 2 of 6)" in result.stdout
    assert_same_weights(adapter(work_dir), adapter(full_dir))
    resumed = read_metrics(work_dir)
    assert [r["step"] for r in resumed] == [3, 4, 5, 6]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in read_metrics(full_dir)][2:]
    # The cut-off checkpoint was written again, completely, and rotation kept 3.
    assert complete_checkpoints(engine, work_dir) == [2, 4, 6]
    assert not list(work_dir.glob("*.tmp"))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_resume_of_an_incomplete_checkpoint_named_explicitly_fails(engine, tmp_path):
    name = checkpoint_name(engine, 2)
    if engine == "mmengine":
        (tmp_path / name).write_bytes(b"PK\x03\x04 cut off")
    else:
        (tmp_path / name).mkdir()
        (tmp_path / name / "trainer_state.json").write_text("{}")
    with pytest.raises(Exception, match="incomplete|not a complete"):
        train(DEMO_CONFIG, work_dir=tmp_path, engine=engine, resume=str(tmp_path / name))


@pytest.mark.slow
def test_mmengine_checkpoints_are_streamed_to_their_file(tmp_path, monkeypatch):
    """The hook writes what the Runner built; MMEngine's in-memory writer gets nothing."""
    import mmengine.runner.runner as runner_module

    calls, real_save = [], runner_module.save_checkpoint

    def recording_save(checkpoint, filename, **kwargs):
        calls.append((dict(checkpoint), filename))
        return real_save(checkpoint, filename, **kwargs)

    monkeypatch.setattr(runner_module, "save_checkpoint", recording_save)
    options = {"method.type": "full", "train.max_steps": 2, "train.save_interval": 1,
               "train.save_total_limit": 0}
    train(DEMO_CONFIG, work_dir=tmp_path, cfg_options=options)
    assert calls == [({}, os.devnull)] * 2
    saved = torch.load(tmp_path / "iter_2.pth", weights_only=False)
    assert {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers",
            "xft_rng_state"} <= saved.keys() and saved["meta"]["iter"] == 2
    exported = load_file(tmp_path / "hf/model.safetensors")  # full fine-tuning: all trained
    assert {f"lm.{name}" for name in exported} <= saved["state_dict"].keys()
    for name, tensor in exported.items():
        torch.testing.assert_close(saved["state_dict"][f"lm.{name}"], tensor, rtol=0, atol=0)


QLORA_RESUME_OPTIONS = {**RESUME_OPTIONS, "model.quantization.bits": 4}


@pytest.mark.slow
def test_mmengine_checkpoints_hold_only_trained_weights_and_qlora_resumes_from_them(tmp_path):
    """The frozen (here 4-bit) base is rebuilt from model.path, not stored in iter_N.pth;
    a resume completes the state with it silently and ends with the uninterrupted weights."""
    from xft.config import load_config
    from xft.model.build import build_model

    full_dir, work_dir = tmp_path / "full", tmp_path / "resumed"
    train(DEMO_CONFIG, work_dir=full_dir, cfg_options=QLORA_RESUME_OPTIONS)
    saved = torch.load(full_dir / "iter_2.pth", weights_only=False)["state_dict"]
    _, experiment = load_config(DEMO_CONFIG, QLORA_RESUME_OPTIONS)
    trainable = {f"lm.{name}" for name, p in build_model(experiment.model, experiment.method).named_parameters()
                 if p.requires_grad}
    assert set(saved) == trainable and all("lora_" in key for key in saved)

    work_dir.mkdir()
    shutil.copy(full_dir / "iter_2.pth", work_dir / "iter_2.pth")
    result = run_cli("train", DEMO_CONFIG, "--work-dir", str(work_dir), "--resume",
                     "--cfg-options", *[f"{k}={v}" for k, v in QLORA_RESUME_OPTIONS.items()])
    assert "missing keys" not in result.stdout + result.stderr
    assert_same_weights(adapter(work_dir), adapter(full_dir))


@pytest.mark.slow
def test_resume_from_a_checkpoint_without_a_trained_weight_names_file_and_key(tmp_path):
    full_dir = tmp_path / "full"
    train(DEMO_CONFIG, work_dir=full_dir, cfg_options={**RESUME_OPTIONS, "train.max_steps": 2})
    checkpoint = torch.load(full_dir / "iter_2.pth", weights_only=False)
    dropped = sorted(checkpoint["state_dict"])[0]
    del checkpoint["state_dict"][dropped]
    broken = tmp_path / "iter_2.pth"
    torch.save(checkpoint, broken)
    with pytest.raises(Exception, match=rf"{broken}.*lacks 1 trained weight.*{dropped}"):
        train(DEMO_CONFIG, work_dir=tmp_path / "w", cfg_options=RESUME_OPTIONS,
              resume=str(broken))


# SIGKILL in the middle of an epoch. 45 samples in micro-batches of 2 make 23
# micro-batches per epoch; with 2 per step, checkpoints every 4 steps fall
# inside epochs (after micro-batch 8, 16, 24, 32... of 23 per epoch).
KILL_OPTIONS = {"train.max_steps": 24, "train.save_interval": 4, "train.save_total_limit": 2,
                "train.log_interval": 1, "train.grad_accum": 2, "train.batch_size": 2}
MICRO_BATCHES_PER_EPOCH = 23


def kill_mid_run(engine, work_dir):
    """Start `xft train`, SIGKILL it once a checkpoint is complete and a later step logged.

    Returns (newest complete checkpoint step, last logged step) at the kill.
    """
    command = [sys.executable, "-m", "xft", "train", DEMO_CONFIG, "--engine", engine,
               "--work-dir", str(work_dir), "--cfg-options",
               *[f"{k}={v}" for k, v in KILL_OPTIONS.items()]]
    process = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=str(REPO)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None:
            saved = complete_checkpoints(engine, work_dir)
            metrics = work_dir / "metrics.jsonl"
            logged = read_metrics(work_dir)[-1]["step"] if metrics.is_file() else 0
            if saved and logged > saved[-1]:
                process.send_signal(signal.SIGKILL)
                process.wait()
                return saved[-1], logged
            time.sleep(0.01)
        raise AssertionError(f"the run ended (rc {process.poll()}) before it could be killed")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_sigkill_mid_epoch_then_resume_ends_with_the_uninterrupted_weights(engine, tmp_path):
    full_dir, work_dir = tmp_path / "full", tmp_path / "killed"
    train(DEMO_CONFIG, work_dir=full_dir, cfg_options=KILL_OPTIONS, engine=engine)
    checkpoint_step, last_logged = kill_mid_run(engine, work_dir)
    total = KILL_OPTIONS["train.max_steps"]
    assert checkpoint_step < last_logged < total
    assert not (work_dir / "hf").exists()  # it did not finish
    # The resume point lies inside an epoch: the data order must go on mid-permutation.
    assert (checkpoint_step * KILL_OPTIONS["train.grad_accum"]) % MICRO_BATCHES_PER_EPOCH != 0

    resume = ["train", DEMO_CONFIG, "--engine", engine, "--work-dir", str(work_dir),
              "--resume", "--cfg-options", *[f"{k}={v}" for k, v in KILL_OPTIONS.items()]]
    # The killed run left its work-dir lock: refused until --force, which breaks a lock
    # whose process is gone.
    refused = run_cli(*resume, check=False)
    assert refused.returncode == 1 and "is in use by another run" in refused.stderr
    run_cli(*resume, "--force")
    assert_same_weights(adapter(work_dir), adapter(full_dir))
    # The killed run's records up to the checkpoint, then the resumed run's (the
    # steps redone replace the killed run's): those of the uninterrupted run.
    assert [(r["step"], r["loss"], r["label_tokens"]) for r in read_metrics(work_dir)] == [
        (r["step"], r["loss"], r["label_tokens"]) for r in read_metrics(full_dir)]
