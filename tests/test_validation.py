"""Validation during training: held-out splits, eval loss on both engines, best weights,
early stopping."""

import json
import math
import shutil
from collections import Counter

import pytest
import torch
from conftest import DEMO_CONFIG, write_config, read_metrics
from safetensors.torch import load_file

from xft.config import load_config
from xft.build import build_data
from xft.objectives import build_objective
from xft.data.templates import get_template
from xft.engine.train import train
from xft.errors import ConfigError
from xft.model.build import build_tokenizer

ENGINES = ["mmengine", "hf"]
QUIET = dict(log=lambda *a: None)
# lr 0.03 (constant) overshoots at step 2: the eval loss rises, so the best step is not the last.
RUN_OPTIONS = {"train.max_steps": 2, "train.log_interval": 1, "train.batch_size": 4,
               "data.test_size": 0.2, "train.eval_interval": 1, "train.save_best": "eval_loss",
               "train.export_best": True, "optim.lr": 0.03, "train.lr_scheduler": "constant",
               "train.warmup_ratio": 0.0, "evaluation.prompts": ["Who are you?"],
               "evaluation.max_new_tokens": 6}


def eval_records(work_dir):
    return [r for r in read_metrics(work_dir) if "eval_loss" in r]


def built_data(options, config=DEMO_CONFIG):
    _, exp = load_config(config, options)
    tokenizer = build_tokenizer(exp.tokenizer, exp.model.path)
    template = get_template(exp.template, tokenizer, exp.data.train_on)
    return build_data(exp, tokenizer, template, build_objective(exp.objective, exp.train),
                      **QUIET)


def keys(dataset):
    return Counter(tuple(dataset[i]["input_ids"]) for i in range(len(dataset)))


def write_alpaca(path, n, tag):
    records = [{"instruction": f"{tag} question {i}?", "input": "", "output": f"{tag} answer {i}."}
               for i in range(n)]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


# --- splits -------------------------------------------------------------------------------

def test_split_is_deterministic_disjoint_and_reported():
    train_a, val_a, report = built_data({"data.test_size": 0.2})
    train_b, val_b, _ = built_data({"data.test_size": 0.2})
    whole, none, _ = built_data({})
    assert none is None
    assert len(val_a) == math.ceil(0.2 * len(whole)) and len(train_a) + len(val_a) == len(whole)
    assert keys(val_a) == keys(val_b) and keys(train_a) == keys(train_b)
    assert not keys(train_a) & keys(val_a)  # no sample in both
    assert keys(train_a) + keys(val_a) == keys(whole)  # nothing lost
    lines = list(report.lines())
    assert "validation: 9 samples" in lines
    assert any("9 of 45 samples held out, 36 left for training" in line for line in lines)
    assert "  validation samples identical to a training sample: 0" in lines
    _, other_seed, _ = built_data({"data.test_size": 0.2, "seed": 7})
    assert keys(other_seed) != keys(val_a)


def test_count_split_is_stratified_by_source_and_happens_before_mixing(tmp_path):
    small = write_alpaca(tmp_path / "small.json", 20, "small")
    config = write_config(tmp_path, f"""
_base_ = ['{_demo_path()}']
datasets = [
    dict(path='xft://data/self_cognition.json', format='alpaca',
         placeholders=dict(name='Tuna', author='the xft team'), ratio=0.5),
    dict(path='{small}', format='alpaca', ratio=0.5),
]
data = dict(test_size=10, mix_size=100)
""")
    train_set, val, report = built_data({}, str(config))
    # 10 shared in proportion to 45 and 20 samples: 6.92 → 7 and 3.08 → 3.
    assert [p.held_out for p in report.validation.split] == [7, 3]
    assert len(val) == 10
    val_texts = Counter(tuple(val[i]["input_ids"]) for i in range(len(val)))
    # Up-sampling repeats training samples, never a held-out one.
    assert len(train_set) == 100 and not keys(train_set) & val_texts


def test_per_dataset_test_size_and_separate_validation_file(tmp_path):
    extra = write_alpaca(tmp_path / "val.json", 5, "held")
    _, val, report = built_data({"datasets.0.test_size": 3,
                                 "val_datasets": [dict(path=str(extra), format="alpaca")]})
    assert len(val) == 3 + 5
    assert [p.held_out for p in report.validation.split] == [3]
    assert any(f"{extra}: validation file, used whole" in line for line in report.lines())


@pytest.mark.slow
def test_packed_validation_set_gives_the_same_eval_loss(tmp_path):
    """Packing follows the training rules and does not change the eval loss."""
    from xft.data.collate import PackedCollator, PadCollator
    from xft.engine.evaluate import evaluate
    from xft.model.build import build_model
    from xft.objectives.sft import SFT

    _, exp = load_config(DEMO_CONFIG, {"data.test_size": 0.3})
    _, val, _ = built_data({"data.test_size": 0.3})
    _, packed, report = built_data({"data.test_size": 0.3, "data.pack": True})
    assert len(packed) < len(val) and report.validation.rows == len(packed)
    model = build_model(exp.model, exp.method)
    pad_id = build_tokenizer(exp.tokenizer, exp.model.path).pad_token_id
    plain = evaluate(model, val, PadCollator(pad_id), SFT(), batch_size=3)
    rows = evaluate(model, packed, PackedCollator(pad_id), SFT(), batch_size=2)
    assert rows.count == plain.count
    assert rows.loss == pytest.approx(plain.loss, rel=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"train.eval_interval": 5}, "needs a validation set"),
    ({"train.save_best": "eval_loss"}, "needs a validation set"),
    ({"data.test_size": 0.1, "train.export_best": True}, "needs train.save_best"),
    ({"data.test_size": 1.5}, "between 0 and 1"),
    ({"val_datasets": [dict(path="v.json", ratio=0.5)]}, "used whole"),
    ({"data.test_size": 0.1, "train.early_stopping": dict(patience=0)}, "patience"),
    ({"data.test_size": 0.1, "train.early_stoping": dict(patience=2)}, "did you mean"),
])
def test_bad_validation_config_fails_clearly(options, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO_CONFIG, options)


def test_held_out_count_that_leaves_nothing_to_train_fails():
    with pytest.raises(ConfigError, match=r"self_cognition.json: test_size holds out 45 of its 45"):
        built_data({"data.test_size": 45})


# --- the evaluation loop on both engines ----------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("validation")
    for engine in ENGINES:
        train(DEMO_CONFIG, work_dir=root / engine, cfg_options=RUN_OPTIONS, engine=engine)
    return {engine: root / engine for engine in ENGINES}


@pytest.mark.slow
def test_both_engines_log_the_same_eval_loss(runs):
    mm, hf = (eval_records(runs[e]) for e in ENGINES)
    assert [r["step"] for r in mm] == [r["step"] for r in hf] == [1, 2]
    for a, b in zip(mm, hf):
        assert b["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-5)
        assert b["eval_label_tokens"] == a["eval_label_tokens"] > 0
        assert a["eval_ppl"] == pytest.approx(math.exp(a["eval_loss"]), rel=1e-5)


@pytest.mark.slow
def test_eval_loss_equals_plain_forward_over_the_held_out_set(runs):
    """The exported best weights (step 1), run sample by sample through the model's own
    loss (model(labels=...) is a mean per sample), weighted by label tokens."""
    from xft.tools.chat import load_chat_model

    _, val, _ = built_data(RUN_OPTIONS)
    model, _, _ = load_chat_model(str(runs["hf"] / "hf"))
    total = tokens = 0
    with torch.no_grad():
        for i in range(len(val)):
            ids, labels = torch.tensor([val[i]["input_ids"]]), torch.tensor([val[i]["labels"]])
            n = int((labels[0, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            tokens += n
    first = eval_records(runs["hf"])[0]
    assert first["step"] == 1 and first["eval_label_tokens"] == tokens
    assert first["eval_loss"] == pytest.approx(total / tokens, rel=1e-5)


@pytest.mark.slow
def test_best_weights_are_those_of_the_lowest_logged_eval_loss(runs):
    for engine in ENGINES:
        records = eval_records(runs[engine])
        lowest = min(records, key=lambda r: r["eval_loss"])
        assert lowest["step"] == 1 != records[-1]["step"]  # the loss rose at step 2
        best = json.loads((runs[engine] / "best/best.json").read_text())
        assert best["step"] == lowest["step"]
        assert best["eval_loss"] == pytest.approx(lowest["eval_loss"], abs=1e-6)
        assert records[-1]["best_step"] == 1
        # export_best: the final artifact holds the best weights, not the last ones.
        final = load_file(runs[engine] / "hf/adapter_model.safetensors")
        kept = load_file(runs[engine] / "best/adapter_model.safetensors")
        assert final.keys() == kept.keys()
        for name in final:
            torch.testing.assert_close(final[name], kept[name], rtol=0, atol=0)


@pytest.mark.slow
def test_eval_results_in_tensorboard_chat_and_plot(runs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from xft.engine.monitor import METRICS_FILE, plot_loss_curve

    for engine in ENGINES:
        events = EventAccumulator(str(runs[engine] / "tensorboard"))
        events.Reload()
        logged = {e.step: e.value for e in events.Scalars("eval/loss")}
        assert logged == pytest.approx({r["step"]: r["eval_loss"]
                                        for r in eval_records(runs[engine])}, rel=1e-6)
        samples = [json.loads(line) for line in (runs[engine] / "chat_samples.jsonl").open()]
        assert [s["step"] for s in samples] == [0, 1, 2]  # at each evaluation, once each
    # The plot draws the validation curve: without the eval records it is another picture.
    train_only = tmp_path / "train_only"
    train_only.mkdir()
    records = [r for r in read_metrics(runs["hf"]) if "loss" in r]
    (train_only / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    assert plot_loss_curve(train_only).read_bytes() != (runs["hf"] / "loss_curve.png").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_early_stopping_on_a_plateau(engine, tmp_path, capsys):
    """With lr 0 the eval loss never improves: stop after `patience` evaluations."""
    options = {"train.max_steps": 20, "train.log_interval": 1, "data.test_size": 5,
               "train.eval_interval": 1, "optim.lr": 0.0,
               "train.early_stopping": dict(patience=2, min_delta=0.0)}
    train(DEMO_CONFIG, work_dir=tmp_path, cfg_options=options, engine=engine)
    records = eval_records(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert len({r["eval_loss"] for r in records}) == 1
    assert records[-1].get("early_stop") and not any(r.get("early_stop") for r in records[:-1])
    assert max(r["step"] for r in read_metrics(tmp_path)) == 3
    assert "early stopping at step 3/20" in capsys.readouterr().out
    assert (tmp_path / "hf/adapter_model.safetensors").is_file()


def test_resume_restores_the_best_loss_and_patience(tmp_path):
    """Eval records before the resume step rebuild the Validator's state."""
    from types import SimpleNamespace

    from xft.config.schema import EarlyStoppingCfg
    from xft.engine.monitor import METRICS_FILE
    from xft.engine.validation import Validator
    from xft.objectives.sft import SFT

    lines = [{"step": 1, "eval_loss": 2.0}, {"step": 2, "eval_loss": 1.0},
             {"step": 3, "eval_loss": 1.5}, {"step": 4, "eval_loss": 0.5}]
    (tmp_path / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines))
    train_cfg = SimpleNamespace(batch_size=1, eval_interval=1, save_best=None, export_best=False,
                                early_stopping=EarlyStoppingCfg(patience=3, min_delta=0.1))
    built = SimpleNamespace(experiment=SimpleNamespace(train=train_cfg), validation=[],
                            collator=None, plan=SimpleNamespace(total_steps=10), tokenizer=None,
                            template=None, config_text="", work_dir=tmp_path, objective=SFT())
    validator = Validator(built, SimpleNamespace(work_dir=tmp_path), chat=None)
    validator.start(3)  # resumed at step 3: the step-4 record belongs to the lost future
    assert (validator.best_value, validator.best_step, validator.stale) == (1.0, 2, 1)


def _demo_path():
    from xft.config.loader import find_config

    return str(find_config(DEMO_CONFIG))
