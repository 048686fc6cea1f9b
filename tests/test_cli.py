import pytest
from conftest import run_cli

from xft import __version__
from xft.cli import main


@pytest.mark.slow
def test_version_and_help():
    assert run_cli("--version").stdout.strip() == f"xft {__version__}"
    help_text = run_cli("-h").stdout
    for command in ("train", "list-cfg", "copy-cfg", "chat"):
        assert command in help_text


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_error_is_one_line_with_nonzero_exit():
    result = run_cli("train", "no_such_config", check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("xft: error: ")
    assert "no_such_config" in lines[0] and "--debug" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_debug_shows_traceback_before_or_after_subcommand():
    for args in (["--debug", "train", "no_such_config"], ["train", "no_such_config", "--debug"]):
        result = run_cli(*args, check=False)
        assert result.returncode != 0
        assert "Traceback" in result.stderr
        assert "ConfigError" in result.stderr


def test_import_has_no_side_effects():
    import subprocess
    import sys

    code = ("import os, sys; before = dict(os.environ); import xft; "
            "assert dict(os.environ) == before; "
            "heavy = {'torch', 'transformers', 'peft', 'mmengine'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
