"""Reward models (objective 'reward'): trained with LoRA on the tiny model, exported whole, loaded
by stock AutoModelForSequenceClassification, scored on apply_chat_template's ids, and measured
by `xft eval --reward` with the same numbers."""

import json
from pathlib import Path

import pytest
import torch
from conftest import read_metrics, run_cli

from xft.engine.train import train
from xft.errors import XftError
from xft.paths import resolve_path

PAIRS = Path(resolve_path("xft://data/self_cognition_pairs.json"))
NAMES = {"{{name}}": "Tuna", "{{author}}": "the xft team"}


def filled(text):
    for key, value in NAMES.items():
        text = text.replace(key, value)
    return text


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("reward")
    train("tiny_llama_lora_dpo_self_cognition", work_dir=work, cfg_options={
        "objective": dict(_delete_=True, type="reward"), "data.test_size": None,
        "train.save_best": None, "train.export_best": False, "train.eval_interval": None,
        "train.log_interval": 1, "train.max_steps": 12})
    return work


@pytest.mark.slow
def test_reward_model_trains_with_its_metrics(reward_run):
    records = read_metrics(reward_run)
    assert {"accuracy", "margin", "scores/chosen", "scores/rejected", "pairs"} <= set(records[0])
    assert records[-1]["loss"] < records[0]["loss"]
    assert records[-1]["accuracy"] >= 0.75


@pytest.mark.slow
def test_export_is_a_stock_sequence_classifier_scoring_the_chat_template(reward_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    export = reward_run / "hf"
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1
    assert not (export / "adapter_config.json").exists()
    model = AutoModelForSequenceClassification.from_pretrained(export).eval()
    tokenizer = AutoTokenizer.from_pretrained(export)
    records = json.loads(PAIRS.read_text(encoding="utf-8"))
    wins = []
    with torch.no_grad():
        for record in records:
            scores = []
            for side in ("chosen", "rejected"):
                messages = [{"role": "user", "content": record["instruction"]},
                            {"role": "assistant", "content": filled(record[side])}]
                ids = tokenizer.apply_chat_template(messages, tokenize=True,
                                                    return_tensors="pt")["input_ids"]
                scores.append(float(model(input_ids=ids).logits[0, 0]))
            wins.append(scores[0] > scores[1])
    stock_accuracy = sum(wins) / len(wins)
    assert stock_accuracy >= 0.75
    run_cli("eval", str(export), "--reward", str(PAIRS), "--format", "alpaca_pairs",
            "--placeholders", "name=Tuna", "author=the xft team", "--out", str(tmp_path))
    result = json.loads((tmp_path / "results.json").read_text())["reward"]
    assert result["eval_count"] == len(records)
    assert result["eval_accuracy"] == pytest.approx(stock_accuracy, abs=1e-9)


@pytest.mark.slow
def test_load_reward_model_scores_as_stock_transformers(reward_run):
    """The RL side's entry point: scores equal the stock model's on apply_chat_template ids,
    for str and message-list prompts, batched with padding."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from xft.inference.reward import load_reward_model

    export = reward_run / "hf"
    scorer = load_reward_model(export)
    stock = AutoModelForSequenceClassification.from_pretrained(export).eval()
    tokenizer = AutoTokenizer.from_pretrained(export)
    records = json.loads(PAIRS.read_text(encoding="utf-8"))[:3]
    prompts = [r["instruction"] for r in records] + [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]]
    completions = [filled(r["chosen"]) for r in records] + ["Hello there, how can I help?"]
    scores = scorer.score(prompts, completions, batch_size=2)
    assert scores.shape == (4,) and scores.dtype == torch.float32
    with torch.no_grad():
        for prompt, completion, score in zip(prompts, completions, scores):
            messages = ([{"role": "user", "content": prompt}] if isinstance(prompt, str)
                        else prompt) + [{"role": "assistant", "content": completion}]
            ids = tokenizer.apply_chat_template(messages, tokenize=True,
                                                return_tensors="pt")["input_ids"]
            assert float(score) == pytest.approx(float(stock(input_ids=ids).logits[0, 0]),
                                                 abs=1e-5)
    adapter_dir = reward_run / "not_a_reward_model"
    adapter_dir.mkdir(exist_ok=True)
    with pytest.raises(XftError):
        load_reward_model(adapter_dir)
