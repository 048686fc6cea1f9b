"""Mixing datasets by ratio, per-dataset truncation, and the encoded-dataset cache."""

import dataclasses
import json
from collections import Counter

import pytest
from transformers import AutoTokenizer

from xft.config.schema import DataCfg, DatasetCfg, Experiment, ModelCfg, validate
from xft.data import formats
from xft.data.mix import split_counts
from conftest import build_dataset
from xft.data.templates import get_template
from xft.errors import ConfigError
from xft.paths import resolve_path

TINY = resolve_path("xft://tiny-llama")


def _alpaca_file(tmp_path, name, answers):
    path = tmp_path / name
    path.write_text(json.dumps([{"instruction": f"q{i}", "output": a} for i, a in
                                enumerate(answers)]), encoding="utf-8")
    return path


def _openai_file(tmp_path, name, answers):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps({"messages": [
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": a}]})
        for a in answers), encoding="utf-8")
    return path


def _experiment(datasets, cache_dir=None, **data):
    data.setdefault("max_length", 128)
    return Experiment(model=ModelCfg(path="xft://tiny-llama"), template="chatml",
                      datasets=datasets, data=DataCfg(cache_dir=cache_dir, **data))


def _build(exp, tokenizer, lines=None):
    return build_dataset(exp, tokenizer, get_template(exp.template, tokenizer),
                         log=(lines.append if lines is not None else lambda _: None))


def _origin(tokenizer, sample):
    text = tokenizer.decode(sample["input_ids"])
    return "A" if "alpha" in text else "B"


def test_mixture_follows_ratios_with_up_and_down_sampling(tmp_path, tokenizer):
    a = _alpaca_file(tmp_path, "a.json", [f"alpha {i}" for i in range(10)])
    b = _openai_file(tmp_path, "b.jsonl", [f"beta {i}" for i in range(30)])
    exp = _experiment([DatasetCfg(path=str(a), ratio=0.5),
                       DatasetCfg(path=str(b), format="openai", ratio=0.5)], mix_size=24)
    lines = []
    dataset, report = _build(exp, tokenizer, lines)
    counts = Counter(_origin(tokenizer, s) for s in dataset)
    assert counts == {"A": 12, "B": 12}
    # A (10 samples) is up-sampled: every sample once, two of them twice.
    texts_a = Counter(tokenizer.decode(s["input_ids"]) for s in dataset
                      if _origin(tokenizer, s) == "A")
    assert len(texts_a) == 10 and sorted(texts_a.values()) == [1] * 8 + [2] * 2
    # B (30 samples) is down-sampled without repetition.
    texts_b = Counter(tokenizer.decode(s["input_ids"]) for s in dataset
                      if _origin(tokenizer, s) == "B")
    assert len(texts_b) == 12
    assert [(p.available, p.used) for p in report.mixture] == [(10, 12), (30, 12)]
    assert "mixture: 24 samples" in lines
    assert any("a.json: 12 of 10 samples (×1.20), 50.0% of the mixture" in x for x in lines)
    # The same seed gives the same mixture; another seed another subset.
    again, _ = _build(exp, tokenizer)
    assert [s["input_ids"] for s in again] == [s["input_ids"] for s in dataset]
    exp.seed += 1
    other, _ = _build(exp, tokenizer)
    assert [s["input_ids"] for s in other] != [s["input_ids"] for s in dataset]


@pytest.mark.parametrize("mix_size, expected", [("sum", (20, 20)), ("no_upsample", (10, 10)),
                                                ("no_downsample", (30, 30))])
def test_mix_size_strategies(tmp_path, tokenizer, mix_size, expected):
    a = _alpaca_file(tmp_path, "a.json", [f"alpha {i}" for i in range(10)])
    b = _alpaca_file(tmp_path, "b.json", [f"beta {i}" for i in range(30)])
    exp = _experiment([DatasetCfg(path=str(a), ratio=0.5), DatasetCfg(path=str(b), ratio=0.5)],
                      mix_size=mix_size)
    _, report = _build(exp, tokenizer)
    assert tuple(p.used for p in report.mixture) == expected


def test_split_counts_sum_to_size():
    assert split_counts(10, [1 / 3, 1 / 3, 1 / 3]) == [4, 3, 3]
    assert sum(split_counts(1001, [0.7, 0.2, 0.1])) == 1001


@pytest.mark.parametrize("ratios, mix_size, message", [
    ((0.5, None), "sum", r"'datasets\[1\].ratio' is missing"),
    ((0.5, 0.6), "sum", "ratios must sum to 1, they sum to 1.1"),
    ((1.5, -0.5), "sum", r"'datasets\[1\].ratio' must be > 0"),
    ((0.5, 0.5), 0, "'data.mix_size' must be a positive number"),
])
def test_bad_ratios_fail_before_reading(tmp_path, tokenizer, ratios, mix_size, message):
    missing = tmp_path / "missing.json"  # never read: the config check comes first
    exp = _experiment([DatasetCfg(path=str(missing), ratio=r) for r in ratios], mix_size=mix_size)
    with pytest.raises(ConfigError, match=message):
        _build(exp, tokenizer)


def test_mix_config_keys_are_validated():
    raw = dict(model=dict(path="m"), template="chatml",
               datasets=[dict(path="a.json", ratio=0.5, truncation="truncate")],
               data=dict(mix_size="no_upsample", pack=True))
    exp = validate(raw)
    assert exp.datasets[0].ratio == 0.5 and exp.data.mix_size == "no_upsample" and exp.data.pack
    raw["data"]["mix_size"] = "everything"
    with pytest.raises(ConfigError, match="mix_size"):
        validate(raw)
    raw["data"] = dict(pak=True)
    with pytest.raises(ConfigError, match="did you mean 'pack'"):
        validate(raw)


def test_truncation_policy_per_dataset_is_counted(tmp_path, tokenizer):
    answers = ["short", "long " * 200]
    a = _alpaca_file(tmp_path, "a.json", answers)
    b = _alpaca_file(tmp_path, "b.json", answers)
    exp = _experiment([DatasetCfg(path=str(a)), DatasetCfg(path=str(b), truncation="truncate")],
                      max_length=64, truncation="drop")
    lines = []
    dataset, report = _build(exp, tokenizer, lines)
    first, second = report.sources
    assert (first.truncation, first.stats.dropped_too_long, first.stats.samples) == ("drop", 1, 1)
    assert (second.truncation, second.stats.truncated, second.stats.samples) == ("truncate", 1, 2)
    assert len(dataset) == 3 and max(len(s["input_ids"]) for s in dataset) == 64
    assert "  samples longer than max_length dropped: 1" in lines
    assert "  samples truncated to max_length: 1" in lines


# ---- cache ---------------------------------------------------------------------------------


def _cached_build(exp, tokenizer, template=None):
    dataset, report = build_dataset(exp, tokenizer, template or get_template(exp.template, tokenizer),
                                    log=lambda _: None)
    return [s["input_ids"] for s in dataset], report.sources[0].cache


def test_second_build_hits_the_cache_and_gives_the_same_samples(tmp_path, tokenizer):
    path = _alpaca_file(tmp_path, "a.json", ["one", "two", "long " * 200])
    exp = _experiment([DatasetCfg(path=str(path))], cache_dir=str(tmp_path / "c"), max_length=64)
    first, state = _cached_build(exp, tokenizer)
    assert state == "built"
    lines = []
    dataset, report = _build(exp, tokenizer, lines)
    assert report.sources[0].cache == "hit"
    assert any(line.startswith("  cache hit: loaded from ") for line in lines)
    assert [s["input_ids"] for s in dataset] == first
    assert report.sources[0].stats.dropped_too_long == 1  # counts survive the cache
    exp.data.cache = False
    assert _cached_build(exp, tokenizer) == (first, "off")


# Each change alters one input of the encoding and returns (experiment, tokenizer, template).

def _file_contents(exp, path, tok, template, monkeypatch):
    path.write_text(path.read_text().replace("one", "uno"))
    return exp, tok, template


def _tokenizer_special_tokens(exp, path, tok, template, monkeypatch):
    tok = AutoTokenizer.from_pretrained(TINY)
    tok.add_special_tokens({"additional_special_tokens": ["<|tool|>"]})
    return exp, tok, template


def _tokenizer_vocabulary(exp, path, tok, template, monkeypatch):
    tok = AutoTokenizer.from_pretrained(TINY)
    tok.add_tokens(["Tunafish"])
    return exp, tok, template


def _template_definition(exp, path, tok, template, monkeypatch):
    return exp, tok, dataclasses.replace(template, turn_separator="\n\n")


def _max_length(exp, path, tok, template, monkeypatch):
    exp.data.max_length = 100
    return exp, tok, template


def _truncation(exp, path, tok, template, monkeypatch):
    exp.datasets[0].truncation = "truncate"
    return exp, tok, template


def _map_function(exp, path, tok, template, monkeypatch):
    def alpaca(record):  # same name, different code
        return formats.alpaca({**record, "output": record["output"].upper()})

    monkeypatch.setitem(formats.FORMATS, "alpaca", alpaca)
    return exp, tok, template


@pytest.mark.parametrize("change", [_file_contents, _tokenizer_special_tokens,
                                    _tokenizer_vocabulary, _template_definition, _max_length,
                                    _truncation, _map_function], ids=lambda f: f.__name__[1:])
def test_each_input_change_rebuilds(tmp_path, tokenizer, monkeypatch, change):
    path = _alpaca_file(tmp_path, "a.json", ["one", "two", "long " * 200])
    exp = _experiment([DatasetCfg(path=str(path))], cache_dir=str(tmp_path / "c"), max_length=64)
    template = get_template("chatml", tokenizer)
    assert _cached_build(exp, tokenizer, template)[1] == "built"
    assert _cached_build(exp, tokenizer, template)[1] == "hit"
    exp, tok, template = change(exp, path, tokenizer, template, monkeypatch)
    assert _cached_build(exp, tok, template)[1] == "built"
    assert _cached_build(exp, tok, template)[1] == "hit"
