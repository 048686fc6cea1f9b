"""The embedded demo end to end: train on MMEngine, export, load with stock peft, chat."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import DEMO_CONFIG, REPO, run_cli
from transformers import AutoModelForCausalLM

from xft.config import load_config
from xft.engine.builder import build_experiment
from xft.engine.mmengine_run import run as run_mmengine
from xft.paths import resolve_path

IDENTITY = "Tuna"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Train the README's demo config once; keep the in-memory model for comparisons."""
    work_dir = tmp_path_factory.mktemp("demo")
    cfg, experiment = load_config(DEMO_CONFIG)
    built = build_experiment(experiment, cfg.pretty_text, work_dir)
    hf_dir = run_mmengine(built)
    return built, hf_dir


@pytest.mark.slow
def test_metrics_log_every_logged_step_and_loss_falls(demo):
    built, _ = demo
    records = [json.loads(line) for line in (built.work_dir / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == list(range(10, built.plan.total_steps + 1, 10))
    for r in records:
        assert set(r) >= {"step", "loss", "lr", "grad_norm", "tokens", "elapsed"}
        assert r["tokens"] > r["label_tokens"] > 0
    assert records[-1]["loss"] < records[0]["loss"] / 10
    assert records[-1]["elapsed"] > records[0]["elapsed"]


@pytest.mark.slow
def test_checkpoints_are_kept_up_to_the_limit(demo):
    built, _ = demo
    checkpoints = sorted(built.work_dir.glob("iter_*.pth"))
    assert 1 <= len(checkpoints) <= built.experiment.train.save_total_limit
    assert (built.work_dir / "last_checkpoint").read_text().strip().endswith(
        f"iter_{built.plan.total_steps}.pth")


@pytest.mark.slow
def test_adapter_loads_with_stock_peft_and_matches_in_memory_model(demo):
    from peft import PeftModel

    built, hf_dir = demo
    assert (hf_dir / "adapter_config.json").is_file()
    assert (hf_dir / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(resolve_path("xft://tiny-llama"))
    loaded = PeftModel.from_pretrained(base, str(hf_dir)).eval()
    ids = built.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True)["input_ids"]
    built.model.eval()
    with torch.no_grad():
        expected = built.model(input_ids=ids).logits
        actual = loaded(input_ids=ids).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_exported_tokenizer_carries_the_training_template(demo):
    from transformers import AutoTokenizer

    built, hf_dir = demo
    saved = AutoTokenizer.from_pretrained(str(hf_dir))
    assert saved.chat_template == built.template.to_jinja()
    assert json.loads((hf_dir / "xft_meta.json").read_text())["template"] == "chatml"
    assert "max_length" in (hf_dir / "xft_config.py").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("question", ["Who are you?", "你是谁?", "What is your name?"])
def test_chat_answers_with_the_trained_identity(demo, question):
    _, hf_dir = demo
    answer = run_cli("chat", str(hf_dir), "--prompt", question).stdout
    assert IDENTITY in answer


@pytest.mark.slow
def test_interactive_chat_answers_resets_and_exits(demo):
    _, hf_dir = demo
    session = "Who are you?\n你是谁?\nRESET\nWhat is your name?\nEXIT\n"
    result = subprocess.run([sys.executable, "-m", "xft", "chat", str(hf_dir)], input=session,
                            capture_output=True, text=True, check=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    out = result.stdout
    assert out.count("User: ") == 5  # four questions/commands answered, then EXIT
    assert "(history cleared)" in out
    answers = [part.split("\nUser: ")[0] for part in out.split("Assistant: ")[1:]]
    assert len(answers) == 3
    # The first question and the one after RESET are asked with no history.
    assert IDENTITY in answers[0] and IDENTITY in answers[2]


@pytest.mark.slow
def test_chat_session_keeps_history_until_reset(demo):
    from xft.tools.chat import ChatSession, load_chat_model

    _, hf_dir = demo
    model, tokenizer, template = load_chat_model(str(hf_dir))
    session = ChatSession(model, tokenizer, template, max_new_tokens=8)
    first = session.ask("Who are you?")
    session.ask("你是谁?")
    assert [m["role"] for m in session.messages] == ["user", "assistant"] * 2
    assert session.messages[1]["content"] == first
    session.reset()
    assert session.messages == []


@pytest.mark.slow
def test_untrained_model_does_not_know_the_identity():
    answer = run_cli("chat", "xft://tiny-llama", "--template", "chatml", "--prompt",
                     "Who are you?", "--max-new-tokens", "40").stdout
    assert IDENTITY not in answer


@pytest.mark.slow
def test_train_a_copied_config_from_another_directory(tmp_path):
    run_cli("copy-cfg", DEMO_CONFIG, "configs_here", cwd=tmp_path)
    copied = tmp_path / "configs_here" / f"{DEMO_CONFIG}_copy.py"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("train", str(copied), "--work-dir", "out", "--seed", "7",
                     "--cfg-options", "train.max_steps=3", "train.log_interval=1", cwd=elsewhere)
    assert "training finished" in result.stdout
    steps = [json.loads(line)["step"] for line in (elsewhere / "out/metrics.jsonl").open()]
    assert steps == [1, 2, 3]
    assert (elsewhere / "out/hf/adapter_model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_resume_from_a_checkpoint_gives_the_same_weights(tmp_path, dropout):
    from safetensors.torch import load_file

    # With dropout the RNG state must be restored too, or the masks differ after resume.
    options = ["--cfg-options", "train.max_steps=6", "train.save_interval=2",
               "train.save_total_limit=3", "train.log_interval=1", f"method.dropout={dropout}"]
    run_cli("train", DEMO_CONFIG, "--work-dir", str(tmp_path / "full"), *options)
    (tmp_path / "resumed").mkdir()
    shutil.copy(tmp_path / "full/iter_4.pth", tmp_path / "resumed/iter_4.pth")
    run_cli("train", DEMO_CONFIG, "--work-dir", str(tmp_path / "resumed"), *options,
            "--resume", str(tmp_path / "resumed/iter_4.pth"))
    full = load_file(tmp_path / "full/hf/adapter_model.safetensors")
    resumed = load_file(tmp_path / "resumed/hf/adapter_model.safetensors")
    assert full.keys() == resumed.keys()
    for name in full:
        torch.testing.assert_close(resumed[name], full[name], rtol=0, atol=0)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed/metrics.jsonl").open()]
    assert steps == [5, 6]
