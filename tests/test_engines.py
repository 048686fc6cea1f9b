"""MMEngine and HF Trainer engines: same losses, same weights, same loss normalisation."""

import json

import pytest
import torch
from conftest import DEMO_CONFIG, read_metrics, run_cli
from safetensors.torch import load_file

from xft.config import load_config
from xft.engine.builder import build_experiment
from xft.engine.train import train
from xft.errors import ConfigError, XftError
from xft.model.loss import token_loss_sum
from xft.model.optimizer import build_optimizer

ENGINES = ["mmengine", "hf"]
PROMPTS = ["Who are you?", "你是谁?"]
PARITY_OPTIONS = {"train.max_steps": 20, "train.log_interval": 1, "train.batch_size": 2,
                  "train.grad_accum": 2, "evaluation.prompts": PROMPTS,
                  "evaluation.interval": 10, "evaluation.max_new_tokens": 12}


def adapter(work_dir):
    return load_file(work_dir / "hf/adapter_model.safetensors")


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory):
    """The demo config for 20 steps (2 × 2 accumulation) on each engine, same seed."""
    root = tmp_path_factory.mktemp("parity")
    for engine in ENGINES:
        train(DEMO_CONFIG, work_dir=root / engine, cfg_options=PARITY_OPTIONS, engine=engine)
    return {engine: root / engine for engine in ENGINES}


@pytest.mark.slow
def test_engines_log_the_same_losses_step_by_step(parity_runs):
    mm, hf = (read_metrics(parity_runs[e]) for e in ENGINES)
    assert [r["step"] for r in mm] == [r["step"] for r in hf] == list(range(1, 21))
    assert [set(r) for r in mm] == [set(r) for r in hf]
    for a, b in zip(mm, hf):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), a["step"]
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-6, abs=1e-12)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
        assert (b["tokens"], b["label_tokens"]) == (a["tokens"], a["label_tokens"])
    assert mm[-1]["loss"] < mm[0]["loss"] / 2  # it trained


@pytest.mark.slow
def test_engines_end_with_the_same_lora_weights(parity_runs):
    mm, hf = (adapter(parity_runs[e]) for e in ENGINES)
    assert mm.keys() == hf.keys() and any("lora_B" in k for k in mm)
    for name in mm:
        torch.testing.assert_close(hf[name], mm[name], rtol=0, atol=1e-5)
    assert max(t.abs().max() for k, t in mm.items() if "lora_B" in k) > 1e-3  # not untrained


@pytest.mark.slow
def test_logged_loss_is_the_step_loss_of_a_plain_forward(parity_runs, tmp_path):
    """Step 1's loss is computed before any update: recompute it from the untouched model."""
    from xft.data.sampler import RunBatchSampler

    cfg, exp = load_config(DEMO_CONFIG, PARITY_OPTIONS)
    built = build_experiment(exp, cfg.pretty_text, tmp_path, log=lambda *a: None)
    batches = iter(RunBatchSampler(len(built.dataset), 2, 2, seed=exp.seed))
    loss_sum = count = 0
    with torch.no_grad():
        for indices in batches:
            batch = built.collator([built.dataset[i] for i in indices])
            s, c = token_loss_sum(built.model(input_ids=batch["input_ids"],
                                              attention_mask=batch["attention_mask"]).logits,
                                  batch["labels"])
            loss_sum, count = loss_sum + s, count + c
    for engine in ENGINES:
        first = read_metrics(parity_runs[engine])[0]
        assert first["label_tokens"] == int(count)
        assert first["loss"] == pytest.approx(float(loss_sum / count), rel=1e-5)


@pytest.mark.slow
def test_tensorboard_loss_curve_and_progress(parity_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for engine in ENGINES:
        work_dir = parity_runs[engine]
        events = EventAccumulator(str(work_dir / "tensorboard"))
        events.Reload()
        logged = {e.step: e.value for e in events.Scalars("train/loss")}
        expected = {r["step"]: r["loss"] for r in read_metrics(work_dir)}
        assert logged.keys() == expected.keys()
        for step, value in expected.items():
            assert logged[step] == pytest.approx(value, rel=1e-6)
        assert {"train/lr", "train/grad_norm", "train/tokens_per_s"} <= set(
            events.Tags()["scalars"])
        png = (work_dir / "loss_curve.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000


@pytest.mark.slow
def test_chat_samples_before_during_and_after_training(parity_runs):
    from xft.tools.chat import ChatSession, load_chat_model

    samples = {}
    for engine in ENGINES:
        lines = (parity_runs[engine] / "chat_samples.jsonl").read_text(encoding="utf-8")
        samples[engine] = [json.loads(line) for line in lines.splitlines()]
        assert [(s["step"], s["prompt"]) for s in samples[engine]] == [
            (step, p) for step in (0, 10, 20) for p in PROMPTS]
    assert samples["mmengine"] == samples["hf"]
    # The final answers are what `xft chat` answers with the exported artifact.
    model, tokenizer, template = load_chat_model(str(parity_runs["hf"] / "hf"))
    session = ChatSession(model, tokenizer, template, max_new_tokens=12)
    for sample in samples["hf"][-len(PROMPTS):]:
        session.reset()
        assert session.ask(sample["prompt"]) == sample["answer"]


def one_step_update(engine, batch_size, grad_accum, work_dir):
    """LoRA weights after one optimizer step with the given micro-batch split of 4 samples."""
    options = {"train.max_steps": 1, "train.batch_size": batch_size,
               "train.grad_accum": grad_accum, "train.warmup_ratio": 0.0,
               "train.lr_scheduler": "constant", "optim.max_grad_norm": None,
               # A large eps makes Adam's first update proportional to the gradient
               # (lr * g / (|g| + eps)), so a wrongly normalised loss shows in the weights.
               "optim.eps": 10.0, "optim.lr": 1.0}
    train(DEMO_CONFIG, work_dir=work_dir, cfg_options=options, engine=engine)
    return adapter(work_dir), options


def reference_update(options, tmp_path):
    """The same step computed plainly: one forward over the 4 samples, sum / label tokens."""
    from xft.data.sampler import RunBatchSampler

    cfg, exp = load_config(DEMO_CONFIG, {**options, "train.batch_size": 4, "train.grad_accum": 1})
    built = build_experiment(exp, cfg.pretty_text, tmp_path, log=lambda *a: None)
    indices = next(iter(RunBatchSampler(len(built.dataset), 4, 1, seed=exp.seed)))
    samples = [built.dataset[i] for i in indices]
    loss_sum, count = 0, 0
    for sample in samples:  # one sample at a time: no padding in the reference
        batch = built.collator([sample])
        s, c = token_loss_sum(built.model(input_ids=batch["input_ids"]).logits, batch["labels"])
        loss_sum, count = loss_sum + s, count + c
    before = {n: p.detach().clone() for n, p in built.model.named_parameters() if p.requires_grad}
    optimizer = build_optimizer(built.model, exp.optim)
    (loss_sum / count).backward()
    optimizer.step()
    after = {n: p.detach() for n, p in built.model.named_parameters() if p.requires_grad}
    lengths = [sum(label != -100 for label in s["labels"][1:]) for s in samples]
    return before, after, lengths


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_accumulation_gives_the_update_of_one_big_batch(engine, tmp_path):
    split, options = one_step_update(engine, 1, 4, tmp_path / "1x4")
    whole, _ = one_step_update(engine, 4, 1, tmp_path / "4x1")
    before, after, lengths = reference_update(options, tmp_path / "ref")
    # Samples with different label counts: a mean of per-micro-batch means would differ.
    assert len(set(lengths)) > 1
    for name, tensor in whole.items():
        ref_name = next(n for n in after if n.endswith(name.replace(".weight", ".default.weight")))
        expected = after[ref_name] - before[ref_name]
        torch.testing.assert_close(split[name] - before[ref_name], expected, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(tensor - before[ref_name], expected, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_resume_without_a_checkpoint_fails_before_training(engine, tmp_path, capsys):
    with pytest.raises(XftError, match=r"--resume: no .*checkpoint"):
        train(DEMO_CONFIG, work_dir=tmp_path, engine=engine, resume=True)
    assert "model:" not in capsys.readouterr().out  # failed before anything was built


def test_engine_is_validated_with_a_suggestion():
    with pytest.raises(Exception, match="did you mean 'hf'"):
        load_config(DEMO_CONFIG, {"train.engine": "hff"})


@pytest.mark.slow
def test_the_old_word_backend_points_at_engine():
    with pytest.raises(ConfigError, match="'train.backend' is now 'train.engine'"):
        load_config(DEMO_CONFIG, {"train.backend": "hf"})
    result = run_cli("train", DEMO_CONFIG, "--backend", "hf", check=False)
    assert result.returncode != 0 and "--backend is now --engine" in result.stderr
