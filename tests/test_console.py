"""What `xft train` prints: the README quickstart's console, captured (not a terminal), on
both engines and in two processes; the libraries' tables with --verbose; the step lines
in MMEngine's log file; a progress bar on a terminal."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest
from conftest import DEMO_CONFIG, REPO, run_cli

# The README quickstart (`xft train tiny_llama_lora_self_cognition --work-dir ...`), cut to
# 6 steps: the console has the same shape, minutes shorter.
SHORT = ["train.max_steps=6", "train.log_interval=2"]
LIBRARY_NOISE = ["mmengine -", "WARNING", "Warning", "warn(", "System environment",
                 "Hooks will be executed", "Loading weights", "Writing model shards", "%|",
                 "dist_cfg", "GPU number", "[real_accelerator"]


def quickstart(work_dir, *extra):
    return run_cli("train", DEMO_CONFIG, "--work-dir", str(work_dir), *SHORT, *extra)


def check_quiet(result, work_dir, launcher_line=False):
    lines = result.stdout.splitlines()
    if launcher_line:
        assert lines.pop(0) == "xft: launching 2 processes on node 0 of 1 (torchrun)"
    assert result.stderr == ""
    for noise in LIBRARY_NOISE:
        assert noise not in result.stdout, noise
    # the data report, the model summary, 3 step lines, the loss curve, the artifact
    assert lines[0].startswith("xft://data/self_cognition.json: 45 records → 45 samples")
    assert sum(line.startswith("model: 1.12M parameters") for line in lines) == 1
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["2/6", "4/6", "6/6"]
    assert all(" eta " in line and " loss " in line for line in steps)
    assert lines[-2] == f"loss curve: {work_dir}/loss_curve.png"
    assert lines[-1] == f"xft: training finished; Hugging Face artifact in {work_dir}/hf"
    assert len(lines) <= 9, lines  # 8 with the dataset cache's hit line
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["mmengine", "hf"])
def test_the_quickstart_console_is_xfts_lines_only(engine, tmp_path):
    work_dir = tmp_path / "tiny"
    check_quiet(quickstart(work_dir, "--engine", engine), work_dir)
    if engine == "mmengine":  # its log file carries the step lines (and everything else)
        (log,) = work_dir.glob("*/*.log")
        text = log.read_text()
        assert "System environment" in text and "loss curve:" in text
        assert [line.split("step ")[1].split()[0] for line in text.splitlines()
                if " - INFO - step " in line] == ["2/6", "4/6", "6/6"]
        # no partial MMEngine config dumps beside xft's own
        assert [p.name for p in work_dir.glob("*.py")] == ["xft_config.py"]
        assert not list(log.parent.glob("*.py")) and not list(work_dir.rglob("vis_data"))


@pytest.mark.slow
def test_verbose_shows_the_libraries(tmp_path):
    result = quickstart(tmp_path / "v", "--verbose")
    assert "System environment" in result.stdout + result.stderr
    assert "Hooks will be executed" in result.stdout + result.stderr


@pytest.mark.slow
def test_two_processes_print_the_report_once(tmp_path):
    work_dir = tmp_path / "two"
    lines = check_quiet(quickstart(work_dir, "--nproc", "2"), work_dir, launcher_line=True)
    assert sum("45 records" in line for line in lines) == 1


@pytest.mark.slow
def test_a_terminal_gets_a_progress_bar(tmp_path):
    """Under a pseudo-terminal, tqdm draws a bar with the step count and ETA."""
    command = [sys.executable, "-m", "xft", "train", DEMO_CONFIG, "--work-dir",
               str(tmp_path / "tty"), *SHORT]
    leader, follower = pty.openpty()
    # an 80 × 24 terminal, as a terminal window has a size
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(command, stdin=follower, stdout=follower, stderr=follower,
                               env=dict(os.environ, PYTHONPATH=str(REPO)))
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the other side closed
            break
        if not chunk:
            break
        output += chunk
    assert process.wait() == 0
    text = output.decode(errors="replace")
    assert "training: 100%" in text and "6/6" in text and "<00:00" in text
    assert "step 6/6  loss" in text  # the logged lines still print, above the bar
