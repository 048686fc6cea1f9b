"""A non-editable install carries the shipped configs and the embedded default."""

import os
import subprocess
import sys

import pytest

from conftest import DEMO_CONFIG, REPO


@pytest.mark.slow
def test_wheel_install_lists_configs_and_ships_assets(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(REPO)],
                   check=True, capture_output=True)
    installed = target / "xft"
    assert (installed / "configs" / "tiny" / f"{DEMO_CONFIG}.py").is_file()
    assert (installed / "assets" / "tiny-llama" / "model.safetensors").is_file()
    assert (installed / "assets" / "data" / "self_cognition.json").is_file()
    assert (installed / "configs" / "deepspeed" / "zero3.json").is_file()
    env = dict(os.environ, PYTHONPATH=str(target))
    listed = subprocess.run([sys.executable, "-m", "xft", "list-cfg"], cwd=tmp_path, env=env,
                            check=True, capture_output=True, text=True).stdout.split()
    assert DEMO_CONFIG in listed
    code = ("import xft.config as c; "
            "exp = c.load_config('%s')[1]; print(c.configs_root())" % DEMO_CONFIG)
    root = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                          capture_output=True, text=True).stdout.strip()
    assert root == str(installed / "configs")
