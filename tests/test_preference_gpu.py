"""Preference training on a GPU (skipped without one): QLoRA DPO with the disabled adapter
as reference (no second model), bf16 compute, on both engines; and a reward model scored
on the GPU by the RL side's loader.

The lead runs: python -m pytest -q -m gpu tests/test_preference_gpu.py
"""

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import read_metrics

from xft.engine.train import train
from xft.paths import resolve_path

DPO_CONFIG = "tiny_llama_lora_dpo_self_cognition"
SHORT = {"data.test_size": None, "train.save_best": None, "train.export_best": False,
         "train.eval_interval": None, "train.log_interval": 1, "train.max_steps": 6}
QLORA = {"model.dtype": "bfloat16", "model.quantization": dict(bits=4)}


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.parametrize("engine", ["mmengine", "hf"])
def test_qlora_dpo_trains_on_gpu_with_the_disabled_adapter_as_reference(engine, tmp_path):
    train(DPO_CONFIG, work_dir=tmp_path, cfg_options={**SHORT, **QLORA, "train.engine": engine})
    records = read_metrics(tmp_path)
    # Step 1: adapter B = 0, so the policy is the reference (the same 4-bit weights).
    assert records[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert all(math.isfinite(r["loss"]) for r in records)
    assert records[-1]["loss"] < records[0]["loss"] and records[-1]["rewards/margins"] > 0
    assert (tmp_path / "hf" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.gpu
def test_reward_model_trains_and_scores_on_gpu(tmp_path):
    from xft.inference.reward import load_reward_model

    train(DPO_CONFIG, work_dir=tmp_path, cfg_options={
        **SHORT, "objective": dict(_delete_=True, type="reward"), "model.dtype": "bfloat16",
        "train.max_steps": 12})
    records = read_metrics(tmp_path)
    assert records[-1]["loss"] < records[0]["loss"]
    scorer = load_reward_model(tmp_path / "hf", device="cuda")
    pairs = json.loads(Path(resolve_path("xft://data/self_cognition_pairs.json")).read_text(
        encoding="utf-8"))
    prompts = [p["instruction"] for p in pairs]
    scores = {side: scorer.score(prompts, [p[side].replace("{{name}}", "Tuna").replace(
        "{{author}}", "the xft team") for p in pairs]) for side in ("chosen", "rejected")}
    assert scores["chosen"].device.type == "cpu" and torch.isfinite(scores["chosen"]).all()
    assert (scores["chosen"] > scores["rejected"]).float().mean() >= 0.75
