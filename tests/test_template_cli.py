"""`xft template list` / `xft template render`, checked against apply_chat_template."""

import json
from pathlib import Path

import pytest
from conftest import family_tokenizer, run_cli
from transformers import AutoTokenizer

from xft.cli import main
from xft.data.encode import encode_conversations
from xft.data.templates import TEMPLATES, get_template
from xft.paths import resolve_path

CHATS = [
    [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Tuna."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
     {"role": "assistant", "content": "Bye!"}],
]


def write_jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_list_names_every_template_with_a_description():
    lines = run_cli("template", "list").stdout.splitlines()
    listed = {line.split()[0]: line.split(None, 1)[1] for line in lines}
    assert set(listed) == set(TEMPLATES)
    assert listed["auto"] == TEMPLATES["auto"].description


def test_render_writes_text_ids_and_labels(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [json.dumps({"messages": m}) for m in CHATS])
    out = tmp_path / "out.jsonl"
    assert main(["template", "render", "--template", "chatml", "--tokenizer", "xft://tiny-llama",
                 "--input", str(src), "--output", str(out)]) == 0
    assert "wrote 2 samples" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(resolve_path("xft://tiny-llama"))
    samples, _ = encode_conversations(CHATS, get_template("chatml", tokenizer), tokenizer, 4096)
    for row, messages, sample in zip(rows, CHATS, samples):
        assert row["text"] == tokenizer.apply_chat_template(messages, tokenize=False)
        assert row["input_ids"] == list(tokenizer.apply_chat_template(messages)["input_ids"])
        assert row["labels"] == sample["labels"]
    # stdout when no --output; --train-on last leaves one trained stretch
    assert main(["template", "render", "--template", "chatml", "--tokenizer", "xft://tiny-llama",
                 "--input", str(src), "--train-on", "last"]) == 0
    last = json.loads(capsys.readouterr().out.splitlines()[1])
    trained = [t for t, label in zip(last["input_ids"], last["labels"]) if label != -100]
    assert tokenizer.decode(trained) == "Bye!<|im_end|>"


def test_bad_line_is_named_in_one_line(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [json.dumps({"messages": CHATS[0]}), "",
                                              '{"messages": [{"role": "user"}]}'])
    assert main(["template", "render", "--template", "chatml", "--tokenizer", "xft://tiny-llama",
                 "--input", str(src)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing half-written
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    # the training pipeline's reader: the record index (blank lines are no records)
    assert f"{src}, record 1, field 'messages[0].content'" in lines[0]


def test_render_errors_for_bad_json_and_unknown_template(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", ["{not json"])
    assert main(["template", "render", "--template", "chatml", "--tokenizer", "xft://tiny-llama",
                 "--input", str(src)]) == 1
    assert f"{src}, record 0: invalid JSON on line 1" in capsys.readouterr().err
    assert main(["template", "render", "--template", "qwen9", "--tokenizer", "xft://tiny-llama",
                 "--input", str(src)]) == 1
    assert "unknown chat template 'qwen9'" in capsys.readouterr().err


FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"


@pytest.mark.parametrize("name", ["alpaca", "llama2_chat", "auto"])
def test_render_beyond_chatml_matches_the_reference_template(tmp_path, capsys, name):
    """`template render` binds the template to the tokenizer (BOS/EOS of base-model formats,
    the tokenizer's own jinja for 'auto'): its text and ids are what the family's reference
    chat_template renders; every trained stretch ends with the end-of-turn text."""
    if name == "auto":
        tokenizer_dir, reference = resolve_path("xft://tiny-llama"), None
    else:
        tokenizer_dir = tmp_path / "tokenizer"
        family_tokenizer(name).save_pretrained(tokenizer_dir)
        reference = (FIXTURES / f"{name}.jinja").read_text(encoding="utf-8")
    src = write_jsonl(tmp_path / "in.jsonl", [json.dumps({"messages": m}) for m in CHATS])
    out = tmp_path / "out.jsonl"
    assert main(["template", "render", "--template", name, "--tokenizer", str(tokenizer_dir),
                 "--input", str(src), "--output", str(out)]) == 0
    capsys.readouterr()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for row, messages in zip(rows, CHATS):
        text = tokenizer.apply_chat_template(messages, chat_template=reference, tokenize=False)
        assert row["text"] == text
        assert row["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
        trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
        assert tokenizer.decode(trained).rstrip().endswith(
            tokenizer.eos_token if name != "auto" else "<|im_end|>")


def test_check_reports_equality_trained_tokens_and_stops(capsys):
    assert main(["template", "check", "xft://tiny-llama", "--template", "chatml"]) == 0
    out = capsys.readouterr().out
    assert out.count("text and ids equal the official template") == 3
    # ChatML has no place for thoughts: refused, as training refuses such records.
    assert "[reasoning] refused, as training would refuse it: template 'chatml' does not " \
           "render reasoning_content" in out
    assert "trained: 'The xft team.<|im_end|>'" in out
    assert "eos_token_id: [2]: stops at the end of a turn" in out
    assert out.rstrip().endswith("0 problem(s)")


def test_check_finds_a_drifted_template_and_a_missing_stop(tmp_path, capsys):
    tokenizer = AutoTokenizer.from_pretrained(resolve_path("xft://tiny-llama"))
    tokenizer.save_pretrained(tmp_path)
    # A base whose generation config stops only at '<|endoftext|>' (id 0).
    (tmp_path / "generation_config.json").write_text('{"eos_token_id": 0}')
    assert main(["template", "check", str(tmp_path), "--template", "chatml"]) == 1
    captured = capsys.readouterr()
    assert "DOES NOT STOP at [2]" in captured.out
    assert captured.err.startswith(f"xft: error: template check: 1 problem(s) in {tmp_path}")
    assert len(captured.err.strip().splitlines()) == 1
    assert main(["template", "check", str(tmp_path), "--template", "default"]) == 1
    out = capsys.readouterr().out
    assert "TEXT DIFFERS at character 0" in out


@pytest.mark.slow
def test_check_on_qwen3_shows_the_trained_thoughts(shared_data, tmp_path, capsys):
    from reasoning_tokenizers import qwen3_tokenizer

    qwen3_tokenizer(shared_data).save_pretrained(tmp_path)
    assert main(["template", "check", str(tmp_path)]) == 0  # auto: no xft_meta.json here
    out = capsys.readouterr().out
    assert out.startswith("template: auto;")
    assert "trained: '<think>\\n3 plus 3 is 6.\\n</think>\\n\\n6.<|im_end|>'" in out
    assert "trained: '4.<|im_end|>'" in out  # an earlier reply: Qwen3 drops its thoughts
