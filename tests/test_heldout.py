"""Held-out records (work_dir/heldout.jsonl) and tools that read any dataset the way
training does: `xft eval --data/--prompts` and `xft template render` with formats,
mappings, config map functions (CONFIG.py:NAME) and registry names.

References: the source files read with plain `json`, the validation samples training
built, and the tokenizer's own apply_chat_template."""

import html
import json
from collections import Counter

import pytest
from conftest import DEMO_CONFIG, read_metrics, run_cli, write_config

from xft.build import build_data
from xft.cli import build_parser, main
from xft.config import load_config
from xft.config.loader import find_config
from xft.config.schema import DataCfg, DatasetCfg
from xft.data.heldout import is_heldout_file, write_heldout
from xft.data.pipeline import SourceBuild, load_source
from xft.data.templates import get_template
from xft.errors import ConfigError, XftError
from xft.model.build import build_tokenizer
from xft.objectives import build_objective
from xft.paths import resolve_path
from xft.tools.eval import run_eval

QUIET = dict(log=lambda *a: None)
TINY = "xft://tiny-llama"
# minimind / miniGPT SFT layout: role/content `conversations`
MINIMIND = [{"conversations": [{"role": "user", "content": f"问题 {i}?"},
                               {"role": "assistant", "content": f"回答 {i}。"}]}
            for i in range(10)]
# A user's own layout, read by a map function the config defines
OWN = [{"q": f"What is {i}?", "a": f"It is {i}."} for i in range(10)]

CONFIG = """
_base_ = ['{demo}']

def qa_pairs(record):
    return [dict(role='user', content=record['q']), dict(role='assistant', content=record['a'])]

datasets = [
    dict(path='xft://data/self_cognition.json', format='alpaca',
         placeholders=dict(name='Tuna', author='the xft team')),
    dict(path='{minimind}', format='openai', columns=dict(messages='conversations')),
    dict(path='{own}', format=qa_pairs),
]
data = dict(test_size=0.3)
system = 'You are Tuna.'
"""


@pytest.fixture
def config(tmp_path):
    minimind, own = tmp_path / "minimind.jsonl", tmp_path / "own.json"
    minimind.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in MINIMIND),
                        encoding="utf-8")
    own.write_text(json.dumps(OWN), encoding="utf-8")
    demo = find_config(DEMO_CONFIG)
    return write_config(tmp_path, CONFIG.format(demo=demo, minimind=minimind, own=own))


def _build(config):
    _, exp = load_config(str(config))
    tokenizer = build_tokenizer(exp.tokenizer, exp.model.path)
    template = get_template(exp.template, tokenizer, exp.data.train_on)
    objective = build_objective(exp.objective, exp.train)
    train, val, report = build_data(exp, tokenizer, template, objective, **QUIET)
    return exp, SourceBuild(exp.data, tokenizer, template, objective, exp.system), val, report


@pytest.mark.slow
def test_heldout_lines_are_the_source_records_and_encode_to_the_validation_set(config, tmp_path):
    exp, build, val, report = _build(config)
    heldout = tmp_path / "heldout.jsonl"
    count = write_heldout(heldout, report.held_out, exp.system, config)
    assert count == len(val) == sum(p.held_out for p in report.validation.split)
    lines = [json.loads(line) for line in heldout.read_text(encoding="utf-8").splitlines()]
    sources = {"xft://data/self_cognition.json":
               json.loads(open(resolve_path("xft://data/self_cognition.json")).read()),
               str(tmp_path / "minimind.jsonl"): MINIMIND, str(tmp_path / "own.json"): OWN}
    for line in lines:
        assert line["record"] == sources[line["source"]][line["index"]]  # as it is in the file
        assert line["system"] == "You are Tuna."
    by_source = Counter(line["source"] for line in lines)
    assert list(by_source.values()) == [p.held_out for p in report.validation.split]
    formats = {line["source"]: line for line in lines}
    assert formats[str(tmp_path / "minimind.jsonl")]["columns"] == {"messages": "conversations"}
    assert formats["xft://data/self_cognition.json"]["placeholders"]["name"] == "Tuna"
    assert formats[str(tmp_path / "own.json")]["format"] == f"{config.resolve()}:qa_pairs"
    assert is_heldout_file(heldout)
    # A second build reads the sources from the cache: the same records are named.
    _, _, _, cached = _build(config)
    assert [s.records for s in cached.held_out] == [s.records for s in report.held_out]
    assert any(s.cache == "hit" for s in cached.sources)
    # Read back by the `heldout` format, the records give exactly the validation samples.
    samples, _ = load_source(DatasetCfg(path=str(heldout), format="heldout"),
                             SourceBuild(exp.data, build.tokenizer, build.template,
                                         build.objective))
    assert Counter(tuple(s["input_ids"]) for s in samples) == \
        Counter(tuple(val[i]["input_ids"]) for i in range(len(val)))


def test_a_config_function_is_found_by_name_or_refused_clearly(config):
    from xft.data.formats import get_format

    fn = get_format(f"{config}:qa_pairs")
    assert fn({"q": "a", "a": "b"})[1]["content"] == "b"
    with pytest.raises(ConfigError, match=r"uses no function named 'minigpt' \(its functions: "
                                          r"qa_pairs\)"):
        get_format(f"{config}:minigpt")
    with pytest.raises(ConfigError, match="config file 'nowhere.py' not found"):
        get_format("nowhere.py:minigpt")


def eval_args(*argv):
    return build_parser().parse_args(["eval", *map(str, argv)])


def test_eval_refuses_bad_data_options_before_loading_the_model(config, tmp_path, monkeypatch):
    import xft.tools.chat

    def no_model(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(xft.tools.chat, "load_chat_model", no_model)
    data = str(tmp_path / "own.json")
    moved = tmp_path / "heldout.jsonl"  # a run's held-out records whose config is gone
    moved.write_text(json.dumps({"source": data, "index": 0, "format": "gone.py:qa_pairs",
                                 "record": OWN[0]}) + "\n", encoding="utf-8")
    for argv, message in [
            (["--data", moved], f"{moved}, record 0: format 'gone.py:qa_pairs': config file "
                                "'gone.py' not found"),
            (["--data", data, "--format", f"{config}:minigpt"], "uses no function named"),
            (["--data", data, "--format", "sft.py:minigpt"], "config file 'sft.py' not found"),
            (["--data", data, "--format", "alpca"], "did you mean 'alpaca'"),
            (["--data", data, "--format", "openai", "--columns", "mesages=conversations"],
             "did you mean 'messages'"),
            (["--data", "self_cognitoin"], "did you mean 'self_cognition'"),
            (["--compare", TINY, "--prompts", data, "--format", "qa"], "field 'question': "
             "missing field (read as format 'qa'; the record's keys: 'q', 'a'"),
            (["--compare", TINY, "--prompts", data, "--format", "qa",
              "--columns", "question=q", "answer=a"], None)]:
        with pytest.raises((XftError, AssertionError)) as caught:
            run_eval(eval_args(TINY, *argv, "--out", tmp_path / "out"), **QUIET)
        if message is None:  # good options: only the (refused) model load stops it
            assert "the model was loaded" in str(caught.value)
        else:
            assert isinstance(caught.value, XftError) and message in str(caught.value)


@pytest.mark.slow
def test_eval_loss_of_a_config_function_a_mapping_and_a_registry_name(config, tmp_path):
    """The same records read three ways (a config's map function, a declarative mapping, the
    registry entry vs its file) give the same loss as training's pipeline on each."""
    own = tmp_path / "own.json"

    def loss(*argv):
        return run_eval(eval_args(TINY, "--template", "chatml", *argv,
                                  "--out", tmp_path / "out"), **QUIET)["loss"]

    by_function = loss("--data", own, "--format", f"{config}:qa_pairs")
    by_mapping = loss("--data", own, "--format", "qa", "--columns", "question=q", "answer=a")
    assert by_function["samples"] == len(OWN)
    assert by_function["eval_loss"] == pytest.approx(by_mapping["eval_loss"], abs=1e-6)
    by_name = loss("--data", "self_cognition")
    by_file = loss("--data", "xft://data/self_cognition.json", "--placeholders", "name=Tuna",
                   "author=the xft team")
    assert by_name["eval_loss"] == pytest.approx(by_file["eval_loss"], abs=1e-6)


def test_template_render_reads_any_dataset_as_training_does(tmp_path, capsys, config):
    from transformers import AutoTokenizer

    minimind = tmp_path / "minimind.jsonl"
    out = tmp_path / "out.jsonl"
    assert main(["template", "render", "--template", "chatml", "--tokenizer", TINY,
                 "--input", str(minimind), "--format", "sharegpt",
                 "--columns", "role=role", "content=content",
                 "--tags", "user=user", "assistant=assistant", "--system", "Be brief.",
                 "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(resolve_path(TINY))
    assert len(rows) == len(MINIMIND)
    for row, record in zip(rows, MINIMIND):
        messages = [{"role": "system", "content": "Be brief."}, *record["conversations"]]
        assert row["text"] == tokenizer.apply_chat_template(messages, tokenize=False)
    # a registry name, and the refusal of a missing field names the format and the keys
    assert main(["template", "render", "--template", "chatml", "--tokenizer", TINY,
                 "--input", "self_cognition", "--output", str(out)]) == 0
    first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert "Tuna" in first["text"]
    assert main(["template", "render", "--template", "chatml", "--tokenizer", TINY,
                 "--input", str(minimind)]) == 1
    err = capsys.readouterr().err
    assert "record 0, field 'messages': missing field (read as format 'openai'; the " \
           "record's keys: 'conversations'" in err


@pytest.mark.slow
def test_train_with_a_split_then_compare_on_the_held_out_part(tmp_path):
    """The documented flow: train with data.test_size, then `xft eval --data` and
    `--compare --prompts` on work_dir/heldout.jsonl as it is."""
    work = tmp_path / "run"
    result = run_cli("train", DEMO_CONFIG, "--work-dir", str(work), "--cfg-options",
                     "data.test_size=5", "train.max_steps=2", "train.epochs=1")
    heldout = work / "heldout.jsonl"
    assert f"held-out records: 5 written to {heldout}" in result.stdout
    lines = [json.loads(line) for line in heldout.read_text(encoding="utf-8").splitlines()]
    source = json.loads(open(resolve_path("xft://data/self_cognition.json")).read())
    assert [line["record"] for line in lines] == [source[line["index"]] for line in lines]
    out = tmp_path / "eval"
    run_cli("eval", str(work / "hf"), "--data", str(heldout), "--compare", TINY,
            "--prompts", str(heldout), "--max-new-tokens", "4", "--out", str(out))
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["loss"]["samples"] == 5 and results["compare"]["prompts"] == 5
    # The same weights on the same samples: the validation loss training logged at the end.
    logged = [r for r in read_metrics(work) if "eval_loss" in r][-1]
    assert results["loss"]["eval_loss"] == pytest.approx(logged["eval_loss"], rel=1e-4)
    assert results["loss"]["label_tokens"] == logged["eval_label_tokens"]
    markdown = (out / "compare.md").read_text(encoding="utf-8")
    assert markdown.splitlines()[0].startswith("| # | prompt | reference | base: ")
    def cell(text):  # Markdown as compare.md writes it: HTML-escaped, one line
        return html.escape(text).replace("|", "\\|").replace("\n", "<br>")

    for i, line in enumerate(lines, 1):  # the records' own answers, placeholders filled
        record = line["record"]
        answer = record["output"].replace("{{name}}", "Tuna").replace("{{author}}",
                                                                        "the xft team")
        question = record["instruction"] + (f"\n{record['input']}" if record["input"] else "")
        assert f"| {i} | {cell(question)} | {cell(answer)} |" in markdown


@pytest.mark.slow
def test_check_dataset_checks_any_dataset_with_the_config_s_settings(config, tmp_path):
    """`check-dataset CFG --data ...` reads a mapped file, a config function and a registry
    name with the config's tokenizer and template; the masked sample is the tokenizer's
    own rendering of the record."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_path(TINY))
    minimind = tmp_path / "minimind.jsonl"
    out = run_cli("check-dataset", DEMO_CONFIG, "--samples", "1", "--color", "never",
                  "--data", str(minimind), "--format", "openai", "--columns",
                  "messages=conversations", "--plot", str(tmp_path / "p.png"), cwd=tmp_path).stdout
    assert f"{minimind}: 10 records → 10 samples" in out
    shown = out.split("--- sample 0")[1].split("\n", 1)[1]
    texts = [tokenizer.apply_chat_template(r["conversations"], tokenize=False) for r in MINIMIND]
    plain = shown.replace("[[", "").replace("]]", "")
    assert any(plain.startswith(t) for t in texts)
    assert "[[回答" in shown and "。<|im_end|>]]" in shown  # the answer is trained
    out = run_cli("check-dataset", str(config), "--samples", "0", "--data", str(tmp_path /
                  "own.json"), "--format", f"{config}:qa_pairs", "--plot",
                  str(tmp_path / "p.png"), cwd=tmp_path).stdout
    assert "own.json: 10 records → 10 samples" in out
    out = run_cli("check-dataset", DEMO_CONFIG, "--samples", "0", "--data", "self_cognition",
                  "--plot", str(tmp_path / "p.png"), cwd=tmp_path).stdout
    assert "self_cognition.json: 45 records → 45 samples" in out
