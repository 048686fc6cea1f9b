"""Hostile checkpoints: every file xft loads is refused, in one line naming it, before any
code in it runs (the payloads create a sentinel file, which must never appear)."""

import numpy as np
import pytest
import torch
from conftest import DEMO_CONFIG, run_cli

from xft.engine.engines import HF_COMPLETE_MARKER as COMPLETE_MARKER
from xft.engine.safe_load import check_pickles, load_weights_only
from xft.errors import XftError
from xft.engine.checkpoints import read_checkpoint


class Call:
    """Pickles as `func(*args)`: the REDUCE opcode a hostile checkpoint is built from."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def payloads(sentinel):
    """{name: object whose unpickling creates `sentinel`} through each route a weights-only
    allow-list has been attacked by."""
    code = f"open({str(sentinel)!r}, 'w').close()"
    rebuild = torch._tensor._rebuild_from_type_v2  # in torch's own allow-list: calls func(*args)
    # getattr(getattr, '__self__') is the builtins module; from it, eval.
    via_getattr = Call(getattr, Call(getattr, getattr, "__self__"), "eval")
    return {
        "eval": Call(eval, code),
        "system": Call(__import__("os").system, f"touch {sentinel}"),
        "rebuild_from_type_v2+eval": Call(rebuild, eval, torch.Tensor, (code,), {}),
        "rebuild_from_type_v2+getattr": Call(rebuild, via_getattr, torch.Tensor, (code,), {}),
        "rebuild_tensor_v2+eval": Call(torch._utils._rebuild_tensor_v2, Call(eval, code),
                                       0, (1,), (1,), False, {}),
        # The globals xft once allow-listed for MMEngine: none may be accepted now.
        "numpy_reconstruct": Call(np._core.multiarray._reconstruct, np.ndarray, (0,), b"b"),
        "numpy_array": np.zeros(2),
        "history_buffer": Call(__import__("mmengine.logging.history_buffer", fromlist=["x"])
                               .HistoryBuffer, [1.0], [1]),
        "getattr": via_getattr,
    }


@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "a checkpoint payload ran"


def hostile_mmengine_checkpoint(path, payload, nested=False):
    """An iter_N.pth-shaped dict with the payload at the top or deep in optimizer state."""
    checkpoint = {"meta": {"iter": 2}, "state_dict": {"lm.w": torch.zeros(2)},
                  "message_hub": {"log_scalars": {}, "runtime_info": {}, "resumed_keys": {}}}
    if nested:
        checkpoint["optimizer"] = {"state": {0: {"exp_avg": payload}}, "param_groups": []}
    else:
        checkpoint["message_hub"]["log_scalars"]["loss"] = payload
    torch.save(checkpoint, path)
    return path


def assert_refused_naming(error, path):
    message = str(error.value)
    assert str(path) in message and "\n" not in message, message


def test_the_getattr_payload_is_live_under_the_old_allow_list(tmp_path):
    """The corpus is real: with `getattr` allow-listed (xft's old list), loading the
    _rebuild_from_type_v2 payload runs it; plain weights_only=True refuses it."""
    sentinel = tmp_path / "ran"
    path = tmp_path / "x.pth"
    torch.save({"x": payloads(sentinel)["rebuild_from_type_v2+getattr"]}, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)
    assert not sentinel.exists()
    with torch.serialization.safe_globals([getattr]):
        with pytest.raises(Exception):  # as_subclass fails after eval has run
            torch.load(path, weights_only=True)
    assert sentinel.exists()


@pytest.mark.parametrize("nested", [False, True], ids=["top", "optimizer_state"])
def test_convert_refuses_every_hostile_mmengine_checkpoint(tmp_path, sentinel, nested):
    for name, payload in payloads(sentinel).items():
        path = hostile_mmengine_checkpoint(tmp_path / f"iter_{name}.pth", payload, nested)
        with pytest.raises(XftError) as error:
            read_checkpoint(path)
        assert_refused_naming(error, path)


@pytest.mark.slow
def test_cli_convert_and_resume_refuse_a_hostile_checkpoint_in_one_line(tmp_path, sentinel):
    work_dir = tmp_path / "w"
    work_dir.mkdir()
    path = hostile_mmengine_checkpoint(work_dir / "iter_2.pth",
                                       payloads(sentinel)["rebuild_from_type_v2+getattr"])
    for args in (["convert", "pth_to_hf", DEMO_CONFIG, str(path), str(tmp_path / "out")],
                 ["train", DEMO_CONFIG, "--work-dir", str(work_dir), "--resume", str(path)]):
        result = run_cli(*args, check=False)
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("xft: error:")]
        assert len(errors) == 1 and str(path) in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["rng_state.pth", "optimizer.pt", "scheduler.pt",
                                  "global_step2/mp_rank_00_model_states.pt"])
def test_trainer_checkpoint_with_a_hostile_file_is_refused_before_trainer(tmp_path, sentinel,
                                                                         name):
    from xft.engine.train import train

    folder = tmp_path / "w" / "checkpoint-2"
    (folder / name).parent.mkdir(parents=True)
    (folder / COMPLETE_MARKER).write_text("2\n")
    torch.save({"state": {0: {"exp_avg": torch.zeros(1)}}, "numpy": ("MT19937", [1, 2])},
               folder / "scheduler.pt")
    torch.save({"x": payloads(sentinel)["rebuild_from_type_v2+getattr"]}, folder / name)
    with pytest.raises(XftError) as error:
        train(DEMO_CONFIG, work_dir=str(tmp_path / "w"), resume=str(folder), engine="hf")
    assert_refused_naming(error, folder / name)


def test_deepspeed_folder_with_a_hostile_shard_is_refused(tmp_path, sentinel):
    folder = tmp_path / "ds"
    (folder / "global_step1").mkdir(parents=True)
    (folder / "latest").write_text("global_step1")
    for name, payload in payloads(sentinel).items():
        for shard in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"):
            path = folder / "global_step1" / shard
            torch.save({"module": {}, "optimizer_state_dict": {"x": payload}}, path)
            with pytest.raises(XftError) as error:
                read_checkpoint(folder)
            assert "\n" not in str(error.value) and "global_step1" in str(error.value), name
            path.unlink()


def test_plain_checkpoints_pass_and_old_format_is_named(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"a": [torch.ones(2), {"b": 1.5, "c": "s"}], "d": (1, None)}, plain)
    assert load_weights_only(plain)["d"] == (1, None)
    check_pickles(tmp_path)  # a folder of plain pickles passes
    old = hostile_mmengine_checkpoint(tmp_path / "old.pth", payloads(tmp_path / "x")
                                      ["history_buffer"])
    with pytest.raises(XftError, match="older xft"):
        load_weights_only(old)
