"""DPO with precomputed reference log-probs (objective.precompute_reference): full fine-tuning
on the tiny model gives the live reference's (a frozen copy's) losses and validation metrics
step by step, on both engines, without keeping a copy; a repeated run takes the scores from
the cache; what cannot work is refused."""

import math

import pytest
from conftest import read_metrics

import xft.objectives.preference as preference
from xft.build import build
from xft.config import load_config
from xft.engine.train import train
from xft.errors import ConfigError

DPO_CONFIG = "tiny_llama_lora_dpo_self_cognition"


def load_experiment(name, options):
    return load_config(name, options)[1]

FULL = {"method.type": "full", "optim.lr": 1e-4, "train.max_steps": 4, "train.log_interval": 1,
        "train.eval_interval": 2, "train.save_best": None, "train.export_best": False,
        "train.batch_size": 2}
PRECOMPUTED = {**FULL, "objective.precompute_reference": True}
COMPARED = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/rejected",
            "eval_loss", "eval_rewards/margins", "eval_rewards/accuracies")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dpo_precompute")
    options = {"live": FULL, "mmengine": PRECOMPUTED,
               "hf": {**PRECOMPUTED, "train.engine": "hf"}}
    for name, cfg_options in options.items():
        train(DPO_CONFIG, work_dir=root / name, cfg_options=cfg_options)
    return {name: read_metrics(root / name) for name in options}


def assert_same_records(records, reference):
    def ordered(rs):  # a step's training record, then its validation record
        return sorted(rs, key=lambda r: (r["step"], "eval_loss" in r))

    records, reference = ordered(records), ordered(reference)
    assert [r["step"] for r in records] == [r["step"] for r in reference]
    for a, b in zip(reference, records):
        assert [k for k in COMPARED if k in a] == [k for k in COMPARED if k in b]
        for key in COMPARED:
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["mmengine", "hf"])
def test_precomputed_reference_trains_and_evaluates_as_the_live_one(runs, engine):
    live = runs["live"]
    assert live[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference
    assert any("eval_loss" in r for r in live)  # validation ran, against the true reference
    steps = [r for r in live if "rewards/margins" in r]
    assert steps[-1]["rewards/margins"] > 0.1  # the policy moved: the reference matters
    assert_same_records(runs[engine], live)


@pytest.mark.slow
def test_a_repeated_run_takes_the_scores_from_the_cache(runs, tmp_path, monkeypatch):
    def no_pass(*args, **kwargs):
        raise AssertionError("the reference pass ran again")

    monkeypatch.setattr(preference, "precompute_scores", no_pass)
    train(DPO_CONFIG, work_dir=tmp_path / "again", cfg_options=PRECOMPUTED)
    assert_same_records(read_metrics(tmp_path / "again"), runs["mmengine"])


@pytest.mark.slow
def test_no_frozen_copy_and_every_sample_carries_its_scores():
    live = build(load_experiment(DPO_CONFIG, FULL), parts=("data", "model"))
    assert live.objective.reference.kind == "copy"
    built = build(load_experiment(DPO_CONFIG, PRECOMPUTED), parts=("data", "model"))
    assert built.objective.reference.kind == "precomputed"
    assert built.objective.reference.module is None
    for dataset in (built.dataset, built.validation):
        assert all(isinstance(s["ref_chosen_logps"], float) and s["ref_chosen_logps"] < 0
                   for s in dataset.samples)
    batch = built.collator(built.dataset.samples[:2])
    assert batch["ref_logps"].tolist() == [s[f"ref_{side}_logps"] for side in
                                           ("chosen", "rejected")
                                           for s in built.dataset.samples[:2]]


def test_what_cannot_work_is_refused():
    with pytest.raises(ConfigError, match="precompute_reference' and 'data.pack'"):
        build(load_experiment(DPO_CONFIG, {**PRECOMPUTED, "data.pack": True}))
    with pytest.raises(ConfigError, match="precompute_reference"):  # KTO has no such option
        load_experiment(DPO_CONFIG, {"objective": dict(_delete_=True, type="kto",
                                                       precompute_reference=True)})
    # Scoring before the pass would use the policy as its own reference: refused.
    objective = build(load_experiment(DPO_CONFIG, PRECOMPUTED), parts=()).objective
    objective.reference = preference.Reference("model")
    with pytest.raises(RuntimeError, match="not precomputed"):
        objective.reference_logps(None, {})
