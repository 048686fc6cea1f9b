import pytest
from conftest import DEMO_CONFIG, REPO, write_config

from xft.config import copy_config, list_configs, load_config
from xft.config.loader import configs_root
from xft.errors import ConfigError

DEMO_FILE = REPO / "configs" / "tiny" / f"{DEMO_CONFIG}.py"


def test_list_cfg_lists_runnable_configs_only():
    names = list_configs()
    assert DEMO_CONFIG in names
    assert names == sorted(set(names))
    on_disk = {p.stem for p in configs_root().rglob("*.py")}
    assert {"tiny_llama", "self_cognition", "lora_short"} <= on_disk  # _base_ parts exist...
    assert not {"tiny_llama", "self_cognition", "lora_short"} & set(names)  # ...but are hidden
    assert list_configs("TINY") == [n for n in names if "tiny" in n]
    assert list_configs("no-such-pattern") == []


def test_inheritance_merges_leaf_over_bases():
    _, exp = load_config(DEMO_CONFIG)
    assert exp.method.r == 32 and exp.method.alpha == 64  # leaf
    assert exp.method.target_modules == "all-linear"  # schedule base
    assert exp.model.path == "xft://tiny-llama"  # model base
    assert exp.datasets[0].placeholders["name"] == "Tuna"  # dataset base
    assert exp.train.lr_scheduler == "cosine" and exp.train.epochs == 40


def test_cfg_options_override_nested_keys():
    _, exp = load_config(DEMO_CONFIG, {"optim.lr": 0.5, "train.epochs": 2})
    assert exp.optim.lr == 0.5 and exp.train.epochs == 2
    assert exp.train.batch_size == 8  # untouched keys keep their values


def test_copy_cfg_is_standalone_and_loads_from_elsewhere(tmp_path, monkeypatch):
    dest = copy_config(DEMO_CONFIG, tmp_path / "mine")
    assert dest.name == f"{DEMO_CONFIG}_copy.py"
    assert "_base_" not in dest.read_text()
    monkeypatch.chdir(tmp_path)
    assert load_config(str(dest))[1] == load_config(DEMO_CONFIG)[1]
    with pytest.raises(ConfigError, match="already exists"):
        copy_config(DEMO_CONFIG, tmp_path / "mine")


def _config_with(tmp_path, extra):
    return write_config(tmp_path, f"_base_ = [{str(DEMO_FILE)!r}]\n{extra}\n")


@pytest.mark.parametrize("extra, message", [
    ("optimm = dict(lr=1.0)", "unknown config key 'optimm'; did you mean 'optim'?"),
    ("model = dict(dtyp='float32')", "unknown config key 'model.dtyp'; did you mean 'dtype'?"),
    ("optim = dict(lr_rate=1e-4)", "unknown config key 'optim.lr_rate'"),
    ("train = dict(batchsize=2)", "did you mean 'batch_size'?"),
    ("datasets = [dict(path='a.json', formatt='alpaca')]",
     "unknown config key 'datasets[0].formatt'; did you mean 'format'?"),
    ("train = dict(batch_size='8')", "'train.batch_size' must be int, got str"),
    ("model = dict(dtype='fp32')", "'model.dtype' must be one of"),
    ("method = dict(type='qlora_typo')", "'method.type' must be one of"),
])
def test_invalid_keys_and_values_fail_with_path(tmp_path, extra, message):
    path = _config_with(tmp_path, extra)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_required_key(tmp_path):
    path = write_config(tmp_path, "model = dict(path='x')\ntemplate = 'chatml'\n")
    with pytest.raises(ConfigError, match="missing required key 'datasets'"):
        load_config(str(path))


def test_private_helper_names_are_allowed(tmp_path):
    path = _config_with(tmp_path, "_my_lr = 1e-3\noptim = dict(lr=_my_lr)")
    assert load_config(str(path))[1].optim.lr == 1e-3


def test_unknown_config_name_suggests_close_names():
    with pytest.raises(ConfigError, match="did you mean tiny_llama_lora_self_cognition"):
        load_config("tiny_llama_lora_self_cognitio")
