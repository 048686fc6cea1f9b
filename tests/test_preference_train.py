"""Preference objectives trained through the seam, on both engines (the tiny embedded model).

- DPO: both engines log the same losses and metrics step by step and end with the same
  adapter; 1 × 4 pairs equals 4 × 1 (the loss is normalised per pair); the shipped tiny
  config moves the held-out reward accuracy;
- continuing from an SFT adapter (method.init_adapter), that adapter is the reference: the
  first loss is ln 2 and every margin 0, and the export holds the trained adapter only;
- SimPO, ORPO, KTO and the reward model train and log their metrics; the reward model's
  export loads with stock AutoModelForSequenceClassification and scores as in training.
"""

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import read_metrics
from safetensors.torch import load_file

from xft.engine.train import train
from xft.paths import resolve_path

DPO_CONFIG = "tiny_llama_lora_dpo_self_cognition"
ENGINES = ["mmengine", "hf"]
PAIR_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected")
SHORT = {"data.test_size": None, "train.save_best": None, "train.export_best": False,
         "train.eval_interval": None, "train.log_interval": 1}


@pytest.fixture(scope="module")
def parity_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo_parity")
    options = {**SHORT, "train.max_steps": 20, "train.batch_size": 2, "train.grad_accum": 2}
    for engine in ENGINES:
        train(DPO_CONFIG, work_dir=root / engine, cfg_options={**options, "train.engine": engine})
    return {engine: root / engine for engine in ENGINES}


@pytest.mark.slow
def test_dpo_engines_log_the_same_losses_and_metrics(parity_runs):
    mm, hf = (read_metrics(parity_runs[e]) for e in ENGINES)
    assert [r["step"] for r in mm] == [r["step"] for r in hf] == list(range(1, 21))
    assert mm[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference
    for a, b in zip(mm, hf):
        assert a["pairs"] == b["pairs"] > 0  # 4, or fewer where an epoch's pairs run out
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-7), a["step"]
        for name in PAIR_METRICS:
            assert b[name] == pytest.approx(a[name], rel=1e-4, abs=1e-6), (a["step"], name)
    assert mm[-1]["loss"] < 0.5 * mm[0]["loss"] and mm[-1]["rewards/margins"] > 0


@pytest.mark.slow
def test_dpo_engines_end_with_the_same_adapter(parity_runs):
    mm, hf = (load_file(parity_runs[e] / "hf/adapter_model.safetensors") for e in ENGINES)
    assert mm.keys() == hf.keys()
    for name in mm:
        torch.testing.assert_close(hf[name], mm[name], rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("objective", [
    dict(type="dpo"),
    # SimPO's log-probs are means over each reply's own trained tokens: padding and the
    # other side's length must not enter them, whatever the micro-batch holds.
    dict(type="simpo", beta=2.0, gamma=0.5)], ids=["dpo", "simpo"])
def test_pair_loss_is_normalised_per_pair(tmp_path, objective):
    runs = {}
    for batch, accum in ((4, 1), (1, 4)):
        work = tmp_path / f"{batch}x{accum}"
        train(DPO_CONFIG, work_dir=work, cfg_options={
            **SHORT, "objective": dict(_delete_=True, **objective), "train.max_steps": 3,
            "train.batch_size": batch, "train.grad_accum": accum})
        runs[batch] = read_metrics(work)
    for a, b in zip(runs[4], runs[1]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7)
        assert b["rewards/margins"] == pytest.approx(a["rewards/margins"], rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_shipped_tiny_dpo_config_moves_held_out_reward_accuracy(tmp_path):
    train(DPO_CONFIG, work_dir=tmp_path, cfg_options={"train.max_steps": 10})
    records = read_metrics(tmp_path)
    first = records[0]
    # Step 1: the policy is the reference, no pair is preferred yet.
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["rewards/accuracies"] == 0
    evals = [r for r in records if "eval_rewards/accuracies" in r]
    assert evals and evals[-1]["eval_rewards/accuracies"] >= 0.9
    assert evals[-1]["eval_rewards/margins"] > 0
    assert (tmp_path / "hf" / "adapter_model.safetensors").is_file()
    # The result is an ordinary adapter for the tools.
    from conftest import run_cli

    merged = tmp_path / "merged"
    run_cli("convert", "merge", "xft://tiny-llama", str(tmp_path / "hf"), str(merged))
    assert (merged / "config.json").is_file()
    # Greedy answers of the merged model and of base + adapter are the same text.
    answers = [run_cli("chat", str(model), "--prompt", "Who are you?",
                       "--max-new-tokens", "8").stdout for model in (merged, tmp_path / "hf")]
    assert answers[0] == answers[1]
    run_cli("eval", str(tmp_path / "hf"), "--data", "xft://data/self_cognition.json",
            "--placeholders", "name=Tuna", "author=the xft team", "--out", str(tmp_path / "ev"))
    loss = json.loads((tmp_path / "ev" / "results.json").read_text())["loss"]
    assert math.isfinite(loss["eval_loss"]) and loss["samples"] > 0


@pytest.mark.slow
def test_continuing_from_an_sft_adapter_uses_it_as_the_reference(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(resolve_path("xft://tiny-llama"))
    sft = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"],
                                          init_lora_weights=False))  # far from the base
    sft.save_pretrained(tmp_path / "sft")
    train(DPO_CONFIG, work_dir=tmp_path / "dpo", cfg_options={
        **SHORT, "train.max_steps": 2, "method.init_adapter": str(tmp_path / "sft")})
    first = read_metrics(tmp_path / "dpo")[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["rewards/margins"] == 0 and first["rewards/chosen"] == 0
    export = tmp_path / "dpo" / "hf"
    assert (export / "adapter_model.safetensors").is_file()
    assert not (export / "reference").exists()  # the frozen reference is not exported


@pytest.mark.slow
@pytest.mark.parametrize("objective, metrics", [
    (dict(type="simpo", beta=2.0, gamma=0.5), PAIR_METRICS),
    (dict(type="orpo", beta=0.1), PAIR_METRICS + ("nll",)),
    (dict(type="dpo", loss_type="ipo", rpo_alpha=0.5), PAIR_METRICS + ("nll",)),
])
def test_other_pair_objectives_train(tmp_path, objective, metrics):
    train(DPO_CONFIG, work_dir=tmp_path, cfg_options={
        **SHORT, "objective": dict(_delete_=True, **objective), "train.max_steps": 4})
    records = read_metrics(tmp_path)
    assert len(records) == 4 and all(set(metrics) <= set(r) for r in records)
    assert all(math.isfinite(r["loss"]) for r in records)
    assert records[-1]["loss"] < records[0]["loss"]


@pytest.mark.slow
def test_kto_trains_on_unpaired_replies(tmp_path):
    pairs = json.loads(Path(resolve_path("xft://data/self_cognition_pairs.json")).read_text(
        encoding="utf-8"))
    items = [{"prompt": p["instruction"], "completion": p[side], "label": side == "chosen"}
             for p in pairs for side in ("chosen", "rejected")]
    data = tmp_path / "kto.json"
    data.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    train(DPO_CONFIG, work_dir=tmp_path / "run", cfg_options={
        **SHORT, "objective": dict(_delete_=True, type="kto", desirable_weight=1.0,
                                   undesirable_weight=1.5),
        "datasets": [dict(path=str(data), format="kto",
                          placeholders=dict(name="Tuna", author="the xft team"))],
        "train.max_steps": 6})
    records = read_metrics(tmp_path / "run")
    assert len(records) == 6 and records[0]["replies"] == 4
    assert {"kl", "rewards/desirable", "rewards/undesirable", "desirable"} <= set(records[0])
    # At step 1 the policy is the reference: every KTO term is w·(1 - σ(0)) = w / 2.
    fraction = records[0]["desirable"]
    assert records[0]["loss"] == pytest.approx(0.5 * fraction + 0.75 * (1 - fraction), abs=1e-6)
    assert records[-1]["loss"] < records[0]["loss"]


@pytest.mark.slow
def test_packed_dpo_trains_alike_on_both_engines(tmp_path):
    options = {**SHORT, "data.pack": True, "train.max_steps": 3, "train.batch_size": 2}
    runs = {}
    for engine in ENGINES:
        train(DPO_CONFIG, work_dir=tmp_path / engine, cfg_options={**options,
                                                                   "train.engine": engine})
        runs[engine] = read_metrics(tmp_path / engine)
    mm, hf = runs["mmengine"], runs["hf"]
    assert mm[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert all(r["pairs"] > 2 for r in mm)  # two rows per micro-batch hold more pairs
    for a, b in zip(mm, hf):
        assert a["pairs"] == b["pairs"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-7), a["step"]
        assert b["rewards/margins"] == pytest.approx(a["rewards/margins"], rel=1e-4, abs=1e-6)
    assert mm[-1]["rewards/margins"] > 0


def test_check_dataset_shows_both_sides_of_each_pair(tmp_path):
    from conftest import run_cli

    out = run_cli("check-dataset", DPO_CONFIG, "--samples", "1", "--color", "never",
                  "--plot", str(tmp_path / "h.png"), cwd=tmp_path).stdout
    chosen, rejected = out.split("--- chosen:\n")[1].split("--- rejected:\n")
    # The prompt is untrained, the reply and its end-of-turn token trained.
    assert chosen.startswith("<|im_start|>user\n") and "<|im_end|>]]" in chosen
    assert "Tuna" in chosen.split("[[")[1] and "Marlin" in rejected.split("[[")[1]
    # Pairs pack whole, both sides in one row of up to 2 × data.max_length (256) tokens.
    assert "packing off (data.pack=False); if on, " in out and "rows of 512 tokens" in out
