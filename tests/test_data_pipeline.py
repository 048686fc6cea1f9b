"""Dataset files → conversations: format map functions, placeholders, bad input."""

import json

import pytest
from transformers import AutoTokenizer

from xft.config.schema import DataCfg, DatasetCfg, Experiment, ModelCfg
from xft.data.formats import alpaca, openai
from conftest import build_dataset
from xft.data.pipeline import fill_placeholders, read_records
from xft.data.templates import get_template
from xft.errors import ConfigError, DataError
from xft.paths import resolve_path


def _experiment(path, fmt="alpaca", on_bad_record="error", **dataset):
    return Experiment(model=ModelCfg(path="xft://tiny-llama"), template="chatml",
                      datasets=[DatasetCfg(path=str(path), format=fmt, **dataset)],
                      data=DataCfg(max_length=256, on_bad_record=on_bad_record))


def _write(tmp_path, name, content, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(content.encode(encoding) if isinstance(content, str) else content)
    return path


def test_alpaca_maps_system_history_and_input():
    messages = alpaca({"instruction": "Translate", "input": "Hello", "output": "Bonjour",
                       "system": "You translate.", "history": [["Hi", "Hey!"]]})
    assert [(m["role"], m["content"]) for m in messages] == [
        ("system", "You translate."), ("user", "Hi"), ("assistant", "Hey!"),
        ("user", "Translate\nHello"), ("assistant", "Bonjour")]


def test_openai_maps_messages_and_loss_flags():
    messages = openai({"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0},
        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]})
    assert [m["loss"] for m in messages] == [None, False, None, None]


def test_placeholders_fill_nested_strings():
    record = {"output": "I am {{name}}", "history": [["{{name}}?", "by {{author}}"]], "n": 3}
    filled = fill_placeholders(record, {"name": "Tuna", "author": "us"})
    assert filled == {"output": "I am Tuna", "history": [["Tuna?", "by us"]], "n": 3}


def test_shipped_self_cognition_data_builds(tokenizer):
    exp = _experiment("xft://data/self_cognition.json",
                      placeholders={"name": "Tuna", "author": "xft"})
    dataset, report = build_dataset(exp, tokenizer, get_template("chatml", tokenizer), log=lambda _: None)
    assert len(dataset) == report.sources[0].records == len(read_records("xft://data/self_cognition.json"))
    text = tokenizer.decode(dataset[0]["input_ids"])
    assert "Tuna" in text and "{{" not in text


def test_jsonl_bom_and_json_lines_in_a_json_file(tmp_path):
    rows = [{"instruction": "q", "output": "a"}, {"instruction": "q2", "output": "a2"}]
    jsonl = "\n".join(json.dumps(r) for r in rows) + "\n"
    assert read_records(_write(tmp_path, "a.jsonl", "\ufeff" + jsonl)) == rows
    assert read_records(_write(tmp_path, "b.json", jsonl)) == rows
    assert read_records(_write(tmp_path, "c.json", "\ufeff" + json.dumps(rows))) == rows


@pytest.mark.parametrize("name, content, message", [
    ("empty.json", "", "file is empty"),
    ("blank.jsonl", "\n\n", "file is empty"),
    ("list.json", "[]", "file has no records"),
    ("obj.json", '{"instruction": "q"}', "top level must be a list"),
    ("broken.json", '[{"instruction": "q",}]', "invalid JSON at line 1"),
    ("broken.jsonl", '{"instruction": "q", "output": "a"}\n{"instruction": \n',
     "record 1: invalid JSON on line 2"),
    ("latin1.json", "[{\"instruction\": \"caf\xe9\"}]".encode("latin-1"), "not valid UTF-8"),
    ("utf16.jsonl", '{"instruction": "q", "output": "a"}\n'.encode("utf-16"), "not valid UTF-8"),
])
def test_unreadable_files_name_the_file(tmp_path, name, content, message):
    path = _write(tmp_path, name, content)
    with pytest.raises(DataError) as info:
        read_records(path)
    assert message in str(info.value) and name in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_records(tmp_path / "nope.json")


BAD_RECORDS = [
    ({"instruction": "q"}, "alpaca", "field 'output': missing field"),
    ({"instruction": "q", "output": 5}, "alpaca", "field 'output': must be a string, got int"),
    ({"instruction": "q", "output": "  "}, "alpaca", "field 'output': is empty"),
    ({"instruction": "q", "output": "a", "history": [["only one"]]}, "alpaca",
     "field 'history[0]'"),
    ({"messages": []}, "openai", "conversation is empty"),
    ({"messages": "hi"}, "openai", "field 'messages': must be a list"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "openai",
     "field 'messages[0].role': unknown role 'robot'"),
    ({"messages": [{"role": "assistant", "content": "x"}]}, "openai",
     "first non-system message must come from the user"),
    ({"messages": [{"role": "user", "content": "x"}]}, "openai", "no assistant message"),
    ({"messages": [{"role": "user", "content": ["x"]}, {"role": "assistant", "content": "y"}]},
     "openai", "field 'messages[0].content': content must be a string, got list"),
    ({"messages": [{"role": "user"}]}, "openai", "field 'messages[0].content': missing field"),
    (["not", "an", "object"], "alpaca", "record must be a JSON object"),
    ({"instrution": "q", "output": "a"}, "alpaca",
     "field 'instruction': missing field; did you mean 'instruction' (the record has "
     "'instrution')?"),
]


@pytest.mark.parametrize("bad, fmt, message", BAD_RECORDS)
def test_bad_record_error_names_file_record_and_field(tmp_path, tokenizer, bad, fmt, message):
    good = ({"instruction": "q", "output": "a"} if fmt == "alpaca" else
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    path = _write(tmp_path, "data.json", json.dumps([good, bad]))
    with pytest.raises(DataError) as info:
        build_dataset(_experiment(path, fmt), tokenizer, get_template("chatml", tokenizer), log=print)
    assert "data.json, record 1" in str(info.value)
    assert message in str(info.value)


def test_bad_records_can_be_skipped_and_are_counted(tmp_path, tokenizer):
    good = {"instruction": "q", "output": "a"}
    records = [good, {"instruction": "q"}, good, {"instruction": "q", "output": 1}]
    path = _write(tmp_path, "data.json", json.dumps(records))
    lines = []
    dataset, report = build_dataset(_experiment(path, on_bad_record="skip"), tokenizer,
                                    get_template("chatml", tokenizer), log=lines.append)
    assert len(dataset) == 2 and report.sources[0].skipped_bad == 2
    report = "\n".join(lines)
    assert "bad records skipped: 2" in report
    assert "field 'output': missing field" in report
    # Each reason is listed right under the skip count, not under a later counter.
    at = lines.index("  bad records skipped: 2")
    assert all(line.startswith("    1 × ") for line in lines[at + 1:at + 3])


def test_unknown_format_fails_before_reading(tmp_path, tokenizer):
    with pytest.raises(ConfigError, match="unknown dataset format 'alpacca'; did you mean "
                                          "'alpaca'"):
        build_dataset(_experiment(tmp_path / "missing.json", "alpacca"), tokenizer,
                      get_template("chatml", tokenizer))


def test_skipped_records_of_a_real_file_are_counted_with_their_reason(shared_data, tokenizer):
    path = shared_data / "datasets/openai/toy_chat_fine_tuning.jsonl"
    lines = []
    exp = _experiment(path, "openai", on_bad_record="skip")
    exp.data.max_length = 4096
    dataset, report = build_dataset(exp, tokenizer, get_template("chatml", tokenizer), log=lines.append)
    reports = report.sources
    assert reports[0].records == 10 and reports[0].skipped_bad == 3
    assert ("    3 × field 'messages': the first non-system message must come from the user"
            in lines)
    # The record with a 26000-character reply is over max_length and dropped, counted.
    assert reports[0].stats.dropped_too_long == 1 and len(dataset) == 6


def test_pretrain_documents_build_without_a_template(tmp_path, tokenizer):
    texts = ["A short page.", "A long page. " * 60]
    path = _write(tmp_path, "docs.jsonl", "\n".join(json.dumps({"text": t}) for t in texts))
    lines = []
    exp = _experiment(path, "pretrain")
    exp.system = "ignored for documents"
    dataset, report = build_dataset(exp, tokenizer, get_template("chatml", tokenizer), log=lines.append)
    reports = report.sources
    assert tokenizer.decode(dataset[0]["input_ids"]) == texts[0] + tokenizer.eos_token
    assert reports[0].stats.split_documents == 1 and len(dataset) > 2
    assert all(len(s["input_ids"]) <= 256 for s in dataset.samples)
    assert "  documents split into max_length pieces: 1" in lines


def test_a_config_function_maps_records(tmp_path, tokenizer):
    def my_fn(record):
        return [{"role": "user", "content": record["q"]},
                {"role": "assistant", "content": record["a"].upper()}]

    path = _write(tmp_path, "qa.json", json.dumps([{"q": "hi", "a": "hello"}]))
    dataset, _ = build_dataset(_experiment(path, my_fn), tokenizer, get_template("chatml", tokenizer),
                               log=lambda _: None)
    assert "HELLO<|im_end|>" in tokenizer.decode(dataset[0]["input_ids"])
    with pytest.raises(DataError, match=r"qa.json, record 0: format function my_fn raised "
                                        r"KeyError: 'a'"):
        build_dataset(_experiment(_write(tmp_path, "qa.json", json.dumps([{"q": "hi"}])), my_fn),
                      tokenizer, get_template("chatml", tokenizer), log=lambda _: None)


def test_parts_a_template_cannot_render_make_the_record_bad(tmp_path, tokenizer):
    # chatml (the tiny model's template) renders no reasoning or tools: rather than
    # training on a conversation without them, the record is rejected.
    thought = [{"role": "user", "content": "1+1?"},
               {"role": "assistant", "content": "2", "reasoning_content": "Easy sum."}]
    tools = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
             "tools": [{"name": "lookup", "description": "d", "parameters": {}}]}
    cases = [(json.dumps([{"messages": thought}]), "openai_with_thought", lambda r: r["messages"],
              "record 0, field 'messages[1].reasoning_content': template 'chatml' does not "
              "render reasoning_content"),
             (json.dumps([tools]), "sharegpt", "sharegpt",
              "record 0, field 'messages[0].tools': template 'chatml' does not render tools")]
    for content, name, fmt, message in cases:
        path = _write(tmp_path, f"{name}.json", content)
        with pytest.raises(DataError) as info:
            build_dataset(_experiment(path, fmt), tokenizer, get_template("chatml", tokenizer),
                          log=lambda _: None)
        assert message in str(info.value)


def test_system_prompt_of_records_with_tools_but_none_of_their_own(tmp_path, tokenizer):
    # The record's own system prompt wins, then the config's `system`, then the template's
    # default; the tool definitions follow whichever it is, in the system turn.
    tools = [{"name": "lookup", "description": "Look it up", "parameters": {}}]
    turns = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]
    records = [{"conversations": turns, "tools": json.dumps(tools)},
               {"conversations": turns, "tools": json.dumps(tools), "system": "Own."}]
    path = _write(tmp_path, "tools.json", json.dumps(records))
    template = get_template("qwen2_chat", tokenizer)
    for system, first in [(None, "You are a helpful assistant."), ("Be brief.", "Be brief.")]:
        exp = _experiment(path, "sharegpt")
        exp.system, exp.data.max_length = system, 2048
        dataset, _ = build_dataset(exp, tokenizer, template, log=lambda _: None)
        texts = [tokenizer.decode(sample["input_ids"]) for sample in dataset.samples]
        for text, prompt in zip(texts, [first, "Own."]):
            assert text.startswith(f"<|im_start|>system\n{prompt}\n\n# Tools\n")
            assert '"name": "lookup"' in text
