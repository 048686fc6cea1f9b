"""The standalone config: copy-cfg keeps comments and functions; a run writes its config
into the work dir at the start, and resumes or converts from that folder alone."""

import io
import json
import shutil
import tokenize

import pytest
import torch
from conftest import run_cli, write_config
from mmengine.config import Config

from xft.config import copy_config, list_configs, load_config
from xft.config.loader import find_config, load_raw_config
from xft.config.standalone import _inheritance_order


def comments_of(path):
    text = path.read_text(encoding="utf-8")
    return [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline)
            if t.type == tokenize.COMMENT]


@pytest.mark.parametrize("name", list_configs())
def test_copy_of_every_shipped_config_loads_equal_and_keeps_its_comments(name, tmp_path):
    dest = copy_config(name, tmp_path)
    original = load_raw_config(name).to_dict()
    original.pop("_base_", None)
    assert Config.fromfile(str(dest)).to_dict() == original
    copied = dest.read_text(encoding="utf-8")
    for source in _inheritance_order(find_config(name)):
        for comment in comments_of(source):
            assert comment in copied, (source, comment)


HELPER_BASE = """
import re

_SUFFIX = '!'  # kept: the map function uses it


def shout(record):
    # A user's own format, defined in a _base_ file.
    return [dict(role='user', content=re.sub('\\\\s+', ' ', record['q'])),
            dict(role='assistant', content=record['a'].upper() + _SUFFIX)]


model = dict(path='xft://tiny-llama')
template = 'chatml'
datasets = [dict(path={data!r}, format=shout)]
data = dict(max_length=64)
method = dict(dropout=0.0)
train = dict(batch_size=2, max_steps=4, save_interval=2, save_total_limit=3, log_interval=1)
"""


@pytest.fixture
def function_config(tmp_path):
    data = tmp_path / "qa.json"
    data.write_text(json.dumps([{"q": f"What  is {i}?", "a": f"it is {i}"} for i in range(8)]))
    write_config(tmp_path, HELPER_BASE.format(data=str(data)), "base.py")
    return write_config(tmp_path, "_base_ = ['base.py']\n# leaf note\ntrain = dict(max_steps=4)\n",
                        "leaf.py")


def test_copy_of_a_config_with_a_function_in_a_base_file(function_config, tmp_path):
    dest = copy_config(str(function_config), tmp_path / "copies")
    text = dest.read_text()
    assert "def shout(record):" in text and "# leaf note" in text and "import re" in text
    _, original = load_config(str(function_config))
    _, copied = load_config(str(dest))
    record = {"q": "What   is  it?", "a": "x"}
    assert copied.datasets[0].format(record) == original.datasets[0].format(record) == [
        dict(role="user", content="What is it?"), dict(role="assistant", content="X!")]
    assert copied.train == original.train


def test_a_lambda_is_written_as_its_source(tmp_path):
    path = write_config(tmp_path, "model = dict(path='xft://tiny-llama')\ntemplate = 'chatml'\n"
                        "datasets = [dict(path='xft://data/self_cognition.json',\n"
                        "                 format=lambda r: [dict(role='user', content=r['q'])])]\n")
    _, copied = load_config(str(copy_config(str(path), tmp_path / "c")), data_paths=False)
    assert copied.datasets[0].format({"q": "hi"}) == [dict(role="user", content="hi")]


@pytest.mark.slow
def test_a_cut_off_run_resumes_and_converts_from_its_work_dir_alone(function_config, tmp_path):
    from safetensors.torch import load_file

    work_dir = tmp_path / "run"
    run_cli("train", str(function_config), "--work-dir", str(work_dir))
    finished = load_file(work_dir / "hf/adapter_model.safetensors")
    # Back to the state of the run cut off after its step-2 checkpoint, and the config
    # files that made it gone: only the work dir is left.
    shutil.rmtree(work_dir / "hf")
    (work_dir / "iter_4.pth").unlink()
    for name in ("leaf.py", "base.py"):
        (tmp_path / name).unlink()
    saved = work_dir / "xft_config.py"
    assert f"work_dir = {str(work_dir.resolve())!r}" in saved.read_text()
    run_cli("convert", "pth_to_hf", str(saved), str(work_dir / "iter_2.pth"),
            str(tmp_path / "step2"))
    assert (tmp_path / "step2/adapter_model.safetensors").is_file()
    run_cli("train", str(saved), "--resume", str(work_dir / "iter_2.pth"))
    resumed = load_file(work_dir / "hf/adapter_model.safetensors")
    assert resumed.keys() == finished.keys()
    for name in finished:
        torch.testing.assert_close(resumed[name], finished[name], rtol=0, atol=0)
