"""What a user already has survives xft: outputs never clobber (`xft convert ...`), one run
per work dir (lock), no half-written artifact loads, a full disk is one clear line."""

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from safetensors.torch import load_file

from xft import outputs
from xft.engine.run_lock import LOCK_FILE, work_dir_lock
from xft.errors import XftError
from xft.tools.split import split_model

TINY = REPO / "xft" / "assets" / "tiny-llama"
TINY_CONFIG = REPO / "configs" / "tiny" / "tiny_llama_lora_self_cognition.py"
DEAD_PID = 2 ** 22 + 12345  # above Linux's pid_max: no process has it


def user_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    return folder


def split_tiny(out, **kwargs):
    return split_model(str(TINY), out, "1MB", log=lambda _: None, **kwargs)


def same_weights(folder):
    tensors = {}
    for shard in Path(folder).glob("*.safetensors"):
        tensors.update(load_file(str(shard)))
    original = load_file(str(TINY / "model.safetensors"))
    return tensors.keys() == original.keys() and all(
        (tensors[k] == v).all() for k, v in original.items())


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A LoRA adapter of the tiny model, saved by peft itself."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(TINY),
                           LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------ 3. never clobber

def test_a_folder_with_files_is_refused_and_kept(tmp_path):
    out = user_files(tmp_path / "out")
    with pytest.raises(XftError, match=r"out is not empty; .*--overwrite"):
        split_tiny(out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_overwrite_replaces_it_and_leaves_the_users_tmp_and_old_alone(tmp_path):
    out = user_files(tmp_path / "out")
    user_files(tmp_path / "out.tmp"), user_files(tmp_path / "out.old")
    split_tiny(out, overwrite=True)
    assert same_weights(out) and not (out / "notes.txt").exists()
    assert (tmp_path / "out.tmp" / "notes.txt").is_file()
    assert (tmp_path / "out.old" / "notes.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.old", "out.tmp"]


@pytest.mark.parametrize("out", [".", "rel/out", "./here/../there"])
def test_relative_outputs_and_the_current_directory(tmp_path, monkeypatch, out):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    written = split_tiny(out)
    assert written == (cwd / out).resolve()
    assert same_weights(written)
    assert outputs.incomplete_reason(written) is None
    assert not [p for p in tmp_path.rglob(".*xft-*")]


def test_the_current_directory_with_files_is_refused_even_with_overwrite(tmp_path, monkeypatch):
    monkeypatch.chdir(user_files(tmp_path / "cwd"))
    with pytest.raises(XftError, match="is not empty"):
        split_tiny(".")
    with pytest.raises(XftError, match="holds the current directory"):
        split_tiny(".", overwrite=True)
    assert (tmp_path / "cwd" / "notes.txt").is_file()


@pytest.mark.slow
def test_merge_refuses_outputs_on_its_inputs(tmp_path, adapter):
    from xft.tools.merge import merge_adapter

    before = sorted(p.name for p in adapter.iterdir())
    base = tmp_path / "base"
    base.symlink_to(TINY)
    cases = {adapter: "the same as the input", adapter / "sub": "inside the input",
             base / "merged": "inside the input", adapter.parent: "holds the input"}
    for out, message in cases.items():
        with pytest.raises(XftError, match=message):
            merge_adapter(base, adapter, out, overwrite=True)
    assert sorted(p.name for p in adapter.iterdir()) == before
    merged = merge_adapter(base, adapter, tmp_path / "merged", log=lambda _: None)
    assert (merged / "config.json").is_file()


def test_pth_to_hf_refuses_its_checkpoint_and_work_dir(tmp_path):
    from xft.tools.pth_to_hf import pth_to_hf

    work_dir = tmp_path / "work"
    work_dir.mkdir()
    (work_dir / "iter_2.pth").write_bytes(b"not read: refused before")
    for out in (work_dir, work_dir / "exported", work_dir / "iter_2.pth"):
        with pytest.raises(XftError, match=r"holds the input|inside the input|is a file"):
            pth_to_hf(str(TINY_CONFIG), str(work_dir / "iter_2.pth"), out, overwrite=True)
    assert [p.name for p in work_dir.iterdir()] == ["iter_2.pth"]


@pytest.mark.slow
def test_the_cli_says_it_in_one_line(tmp_path):
    out = user_files(tmp_path / "out")
    result = run_cli("convert", "split", str(TINY), str(out), "--max-shard-size", "1MB",
                     check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "is not empty" in result.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_a_failed_write_keeps_the_previous_output(tmp_path, monkeypatch):
    import huggingface_hub

    out = tmp_path / "out"
    split_tiny(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(state, folder, **kwargs):
        (Path(folder) / "model-00001.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(huggingface_hub, "save_torch_state_dict", broken)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        split_tiny(out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_leftovers_are_removed_only_when_xft_made_them_and_their_process_is_gone(tmp_path):
    ours = tmp_path / f".out.xft-tmp-{DEAD_PID}"
    ours.mkdir()
    (ours / outputs.MARKER).write_text("")
    backup = tmp_path / f".out.xft-old-{DEAD_PID}"
    backup.mkdir()
    unmarked = user_files(tmp_path / f".out.xft-tmp-{DEAD_PID + 1}")  # no marker: not ours
    running = tmp_path / f".out.xft-tmp-{os.getppid()}"  # a live process's
    running.mkdir()
    (running / outputs.MARKER).write_text("")
    split_tiny(tmp_path / "out")
    assert not ours.exists() and not backup.exists()
    assert (unmarked / "notes.txt").is_file() and running.is_dir()


# ------------------------------------------------------------- 4. one run per work dir

def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path):
    with work_dir_lock(tmp_path) as lock:
        owner = json.loads(lock.read_text())
        assert owner == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(XftError, match=rf"in use by another run \(pid {os.getpid()} on "
                                           rf"{socket.gethostname()}\)"):
            with work_dir_lock(tmp_path):
                pass
        with pytest.raises(XftError, match="still running"):
            with work_dir_lock(tmp_path, force=True):
                pass
    assert not (tmp_path / LOCK_FILE).exists()  # released
    with work_dir_lock(tmp_path):
        pass


def write_lock(work_dir, pid, host=None):
    (work_dir / LOCK_FILE).write_text(json.dumps({"pid": pid,
                                                  "host": host or socket.gethostname()}))


def test_force_breaks_a_stale_lock_and_says_so(tmp_path):
    write_lock(tmp_path, DEAD_PID)
    with pytest.raises(XftError, match="--force if that run is gone"):
        with work_dir_lock(tmp_path):
            pass
    said = []
    with work_dir_lock(tmp_path, force=True, log=said.append):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert said == [f"xft: broke the stale lock of another run (pid {DEAD_PID} on "
                    f"{socket.gethostname()}) on {tmp_path}"]
    write_lock(tmp_path, DEAD_PID, host="elsewhere")
    with pytest.raises(XftError, match="cannot check a process on another host"):
        with work_dir_lock(tmp_path, force=True):
            pass


def test_train_takes_the_lock_on_rank_0_only(tmp_path, monkeypatch):
    import xft.engine.train as train_module

    ran = []
    monkeypatch.setattr(train_module, "_train", lambda *args: ran.append(
        (tmp_path / LOCK_FILE).is_file()) or "done")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path, sleeper.pid)  # a run that is alive
        with pytest.raises(XftError, match="is in use by another run"):
            train_module.train(str(TINY_CONFIG), work_dir=str(tmp_path))
        # torchrun's other workers do not take it (rank 0 of their run holds it)
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert train_module.train(str(TINY_CONFIG), work_dir=str(tmp_path)) == "done"
    finally:
        sleeper.kill()
        sleeper.wait()
    monkeypatch.setenv("RANK", "0")
    stale_export = tmp_path / f".hf.xft-tmp-{DEAD_PID}"
    stale_export.mkdir()
    (stale_export / outputs.MARKER).write_text("")
    with pytest.raises(XftError, match="--force"):
        train_module.train(str(TINY_CONFIG), work_dir=str(tmp_path))
    assert train_module.train(str(TINY_CONFIG), work_dir=str(tmp_path), force=True) == "done"
    assert ran == [True, True]  # rank 1 saw the other run's lock; rank 0 held its own
    assert not (tmp_path / LOCK_FILE).exists() and not stale_export.exists()


# -------------------------------------------------- 5. nothing half-written loads

def test_chat_names_a_missing_unfinished_or_incomplete_model(tmp_path):
    from xft.tools.chat import load_chat_model

    staging = tmp_path / f".hf.xft-tmp-{DEAD_PID}"
    staging.mkdir()
    (staging / "config.json").write_text("{")  # cut off mid-write
    half = tmp_path / "half"
    half.mkdir()
    (half / outputs.MARKER).write_text("")
    (tmp_path / "empty").mkdir()
    cases = {str(tmp_path / "work" / "hf"): "model directory not found: .*/work/hf",
             str(staging): "temporary folder left by an xft write that did not finish",
             str(half): "half is incomplete",
             str(tmp_path / "empty"): "empty is not a model directory"}
    for path, message in cases.items():
        with pytest.raises(XftError, match=message):
            load_chat_model(path)
    with pytest.raises(XftError, match="adapter directory not found: .*nowhere"):
        load_chat_model(str(TINY), adapter=str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_chat_and_eval_commands_say_it_in_one_line(tmp_path):
    for command in (["chat", str(tmp_path / "w" / "hf"), "--prompt", "hi"],
                    ["eval", str(tmp_path / "w" / "hf"), "--compare", str(TINY), "--prompts",
                     "p.txt", "--out", str(tmp_path / "eval")]):
        result = run_cli(*command, check=False, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        assert result.stderr.count("\n") == 1 and "not found" in result.stderr


# ------------------------------------------------------------------------ 6. disk full

def enospc(filename=None):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)


def test_a_full_disk_during_a_checkpoint_names_the_file(tmp_path, monkeypatch):
    """torch.save reports a failed write as 'unexpected pos'; xft names file and cause."""
    import io

    import torch

    class FullDisk(io.FileIO):
        def write(self, data):
            raise enospc()

    previous = tmp_path / "iter_1.pth"
    torch.save({"w": torch.ones(3)}, previous)
    monkeypatch.setattr(outputs, "open", lambda path, mode: FullDisk(path, mode), raising=False)
    target = tmp_path / "iter_2.pth.tmp"
    with pytest.raises(XftError, match=rf"^{target}: no space left on device$"):
        outputs.save_torch({"w": torch.zeros(10_000)}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_1.pth"]
    assert torch.load(previous)["w"].tolist() == [1, 1, 1]


def test_a_full_disk_during_a_convert_keeps_the_previous_output(tmp_path, monkeypatch):
    import huggingface_hub

    out = tmp_path / "out"
    split_tiny(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full(state, folder, **kwargs):
        raise enospc(str(Path(folder) / "model-00002-of-00004.safetensors"))

    monkeypatch.setattr(huggingface_hub, "save_torch_state_dict", full)
    with pytest.raises(XftError, match=r"model-00002-of-00004\.safetensors: no space left on "
                                       r"device$"):
        split_tiny(out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_safetensors_own_wording_of_a_full_disk_is_recognised(tmp_path):
    from safetensors import SafetensorError

    with pytest.raises(XftError, match=r"^.*model\.safetensors: no space left on device$"):
        with outputs.disk_full_as_error(tmp_path / "model.safetensors"):
            raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: "
                                  "StorageFull, message: \"No space left on device\" })")
    with pytest.raises(RuntimeError, match="unrelated"):
        with outputs.disk_full_as_error(tmp_path / "x"):
            raise RuntimeError("unrelated")


def test_a_full_disk_while_caching_a_dataset(tmp_path, monkeypatch):
    import numpy as np

    from xft.data import cache

    def full(path, **arrays):
        raise enospc(str(path))

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(XftError, match=r"samples\.npz: no space left on device$"):
        cache.save(tmp_path, "k" * 32, {}, [{"input_ids": [1], "labels": [1]}], {},
                   fields=("input_ids", "labels"))
    assert list((tmp_path / "datasets").iterdir()) == []


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 2 MiB file system (needs root and mount); skipped where mounting fails."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_real_full_disk_during_a_convert(small_tmpfs):
    """The tiny model is 3.2 MB: it cannot fit; what was there stays, nothing is left."""
    (small_tmpfs / "keep").mkdir()
    (small_tmpfs / "keep" / "notes.txt").write_text("mine")
    with pytest.raises(XftError, match=r"no space left on device$"):
        split_tiny(small_tmpfs / "out")
    assert sorted(p.name for p in small_tmpfs.iterdir()) == ["keep"]
    assert (small_tmpfs / "keep" / "notes.txt").read_text() == "mine"
