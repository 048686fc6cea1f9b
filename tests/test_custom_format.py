"""A format map function defined in the user's own config file: train, resume, copy-cfg."""

import json
import shutil

import pytest
import torch
from conftest import run_cli, write_config

from xft.config import load_config
from xft.config.schema import validate
from xft.errors import ConfigError

CONFIG = """
def qa_upper(record):
    # A user's own format: shout the answers.
    return [dict(role='user', content=record['q']),
            dict(role='assistant', content=record['a'].upper())]

model = dict(path='xft://tiny-llama')
template = 'chatml'
datasets = [dict(path={data!r}, format=qa_upper)]
data = dict(max_length=64)
method = dict(dropout=0.0)  # LoRA dropout draws random numbers; resume restores weights, not RNG
train = dict(batch_size=2, max_steps=4, save_interval=2, save_total_limit=3, log_interval=1)
"""


@pytest.fixture
def config(tmp_path):
    data = tmp_path / "qa.json"
    data.write_text(json.dumps([{"q": f"What is {i}?", "a": f"it is {i}"} for i in range(8)]))
    return write_config(tmp_path, CONFIG.format(data=str(data)))


def test_the_schema_accepts_a_function_and_rejects_other_values(config):
    _, experiment = load_config(str(config))
    fmt = experiment.datasets[0].format
    assert fmt.__name__ == "qa_upper"
    assert fmt({"q": "x", "a": "y"})[1]["content"] == "Y"
    with pytest.raises(ConfigError, match=r"'datasets\[0\].format' has an invalid value 3 "
                                          r"\(str or function expected\)"):
        validate(dict(model=dict(path="m"), template="chatml", datasets=[dict(path="p", format=3)]))


@pytest.mark.slow
def test_train_and_resume_with_a_config_function(config, tmp_path):
    from safetensors.torch import load_file

    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run_cli("train", str(config), "--work-dir", str(full))
    saved = (full / "hf/xft_config.py").read_text()
    assert "def qa_upper(record):" in saved and "record['a'].upper()" in saved
    resumed.mkdir()
    shutil.copy(full / "iter_2.pth", resumed / "iter_2.pth")
    run_cli("train", str(config), "--work-dir", str(resumed), "--resume",
            str(resumed / "iter_2.pth"))
    a = load_file(full / "hf/adapter_model.safetensors")
    b = load_file(resumed / "hf/adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").open()]
    assert steps == [3, 4]


def test_copy_cfg_copies_a_config_with_a_function(config, tmp_path):
    run_cli("copy-cfg", str(config), str(tmp_path / "copies"))
    copy = tmp_path / "copies/cfg_copy.py"
    assert "# A user's own format: shout the answers." in copy.read_text()
    _, experiment = load_config(str(copy))
    assert experiment.datasets[0].format({"q": "x", "a": "y"})[1]["content"] == "Y"
