"""`xft check-dataset`: validation, masked samples, statistics, histogram."""

import json
import re
from pathlib import Path

import pytest

from transformers import AutoTokenizer

from conftest import DEMO_CONFIG, FAMILY_TOKENS, family_tokenizer, run_cli, write_config
from xft.data.encode import encode_conversations
from xft.data.templates import get_template
from xft.paths import resolve_path
from xft.tools.check_dataset import masked_text, percentiles

CONFIG = """
model = dict(path='xft://tiny-llama')
template = 'chatml'
datasets = [dict(path={path!r}, format='alpaca')]
data = dict(max_length=40, on_bad_record={on_bad!r}, truncation='truncate')
"""


def test_masked_text_marks_exactly_the_trained_tokens():
    tokenizer = AutoTokenizer.from_pretrained(resolve_path("xft://tiny-llama"))
    messages = [{"role": "user", "content": "Who are you?"},
                {"role": "assistant", "content": "I am Tuna."},
                {"role": "user", "content": "Sure?"},
                {"role": "assistant", "content": "Yes."}]
    (sample,), _ = encode_conversations([messages], get_template("chatml", tokenizer), tokenizer, 1024)
    text = masked_text(tokenizer, sample["input_ids"], sample["labels"])
    assert text == ("<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n"
                    "[[I am Tuna.<|im_end|>]]\n<|im_start|>user\nSure?<|im_end|>\n"
                    "<|im_start|>assistant\n[[Yes.<|im_end|>]]\n")
    colored = masked_text(tokenizer, sample["input_ids"], sample["labels"], color=True)
    assert "\033[1;32mI am Tuna.<|im_end|>\033[0m" in colored


def test_percentiles_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert percentiles(values, (0, 50, 90, 100)) == {0: 1, 50: 50, 90: 90, 100: 100}
    assert percentiles([7], (0, 50, 100)) == {0: 7, 50: 7, 100: 7}


@pytest.mark.slow
def test_check_dataset_on_the_shipped_demo(tmp_path):
    result = run_cli("check-dataset", DEMO_CONFIG, "--samples", "2", cwd=tmp_path)
    out = result.stdout
    assert out.count("--- sample ") == 2
    assert "[[I am Tuna" in out  # placeholders filled, the answer marked as trained
    records = json.loads(Path(resolve_path("xft://data/self_cognition.json")).read_text("utf-8"))
    assert f"records: {len(records)}, bad records skipped: 0" in out
    assert "token length percentiles: p0=" in out
    assert "efficiency" in out
    png = tmp_path / f"{DEMO_CONFIG}_lengths.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _data_file(tmp_path):
    records = [{"instruction": "q", "output": "short"},
               {"instruction": "q", "output": 3},  # bad: output is not a string
               {"instruction": "q", "output": "word " * 80},  # longer than max_length 40
               {"instruction": "q", "output": "fine"}]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.mark.slow
def test_bad_record_fails_with_file_record_and_field(tmp_path):
    path = _data_file(tmp_path)
    cfg = write_config(tmp_path, CONFIG.format(path=str(path), on_bad="error"))
    result = run_cli("check-dataset", str(cfg), cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert "data.json, record 1, field 'output': must be a string, got int" in result.stderr


@pytest.mark.slow
def test_skipped_and_truncated_records_are_counted(tmp_path):
    path = _data_file(tmp_path)
    cfg = write_config(tmp_path, CONFIG.format(path=str(path), on_bad="skip"))
    plot = tmp_path / "hist.png"
    out = run_cli("check-dataset", str(cfg), "--plot", str(plot), "--color", "never",
                  cwd=tmp_path).stdout
    assert "records: 4, bad records skipped: 1" in out
    assert "samples: 3 kept, 3 in the training set" in out
    assert "truncated: 1" in out
    assert "p100=40" in out  # the truncated sample is exactly max_length long
    assert plot.is_file()


# --- built exactly as training builds it (issue 13) ------------------------------------------

MULTI_TURN = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                            {"role": "assistant", "content": f"First answer {i}."},
                            {"role": "user", "content": "And then?"},
                            {"role": "assistant", "content": f"Second answer, number {i}."}]}
              for i in range(6)]
# Every registered family (mistral_v3 with mistral's tokens) and 'auto' (the tiny tokenizer's
# own chat_template).
FAMILIES = sorted(FAMILY_TOKENS) + ["mistral_v3", "auto"]


def _family_options(tmp_path, name, train_on):
    if name == "auto":
        tokenizer_dir = "xft://tiny-llama"
    else:
        tokenizer_dir = tmp_path / "tokenizer"
        family_tokenizer("mistral" if name == "mistral_v3" else name).save_pretrained(
            tokenizer_dir)
    data = tmp_path / "multi_turn.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in MULTI_TURN), encoding="utf-8")
    return {"template": name, "tokenizer.path": str(tokenizer_dir), "data.train_on": train_on,
            "datasets": [dict(path=str(data), format="openai"),
                         dict(path="xft://data/self_cognition.json", format="alpaca",
                              placeholders=dict(name="Xiaoxi", author="xft"))]}


@pytest.mark.slow
@pytest.mark.parametrize("train_on", ["all", "last"])
@pytest.mark.parametrize("name", FAMILIES)
def test_trained_tokens_equal_what_training_counts(tmp_path, name, train_on):
    """check-dataset's trained-token count is the one training normalises by: the
    objective's count over the training data, collated as the engines collate it."""
    from xft.build import build
    from xft.config import load_config
    from xft.tools.check_dataset import check_dataset

    options = _family_options(tmp_path, name, train_on)
    lines = []
    report = check_dataset(DEMO_CONFIG, options, plot=tmp_path / "lengths.png",
                           out=lines.append)
    shown = sum(int(re.search(r"\((\d+) trained tokens of", line).group(1))
                for line in lines if " trained tokens of " in line)
    _, experiment = load_config(DEMO_CONFIG, options)
    built = build(experiment, log=lambda *_: None)
    counted = sum(int(built.objective.count(built.collator([built.dataset[i]])))
                  for i in range(len(built.dataset)))
    assert shown == counted == sum(s.stats.label_tokens for s in report.sources) > 0
    if train_on == "last":  # the first reply of each multi-turn record is not trained
        all_options = _family_options(tmp_path, name, "all")
        _, experiment = load_config(DEMO_CONFIG, all_options)
        assert build(experiment, log=lambda *_: None).report.sources[0].stats.label_tokens \
            > report.sources[0].stats.label_tokens


@pytest.mark.slow
@pytest.mark.parametrize("template", ["alpaca", "llama2_chat", "auto"])
def test_check_dataset_binds_the_template_as_training_does(tmp_path, template):
    """Regression: templates that use the tokenizer's BOS/EOS failed with 'bind it with
    get_template(name, tokenizer)' in check-dataset."""
    result = run_cli("check-dataset", DEMO_CONFIG, "--samples", "1", "--color", "never",
                     "--cfg-options", f"template={template}", "data.train_on=last", cwd=tmp_path)
    assert "--- sample 0" in result.stdout and "[[" in result.stdout
