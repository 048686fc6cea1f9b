import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_CONFIG = "tiny_llama_lora_self_cognition"


def run_cli(*args, cwd=None, check=True):
    """Run `python -m xft ARGS` in a subprocess, as a user would run the command."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "xft", *args], cwd=cwd, env=env,
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"xft {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def write_config(directory, text, name="cfg.py"):
    path = Path(directory) / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Keep the dataset cache of every test (and CLI subprocess) out of the user's ~/.cache."""
    root = tmp_path_factory.mktemp("xft-cache")
    previous = os.environ.get("XFT_CACHE_DIR")
    os.environ["XFT_CACHE_DIR"] = str(root)
    yield root
    if previous is None:
        del os.environ["XFT_CACHE_DIR"]
    else:
        os.environ["XFT_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one")
    config.addinivalue_line("markers", "slow: trains a model or takes more than a few seconds")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
