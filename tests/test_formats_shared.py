"""Every format on the real files in ../shared/data: each record maps or is rejected for a
stated reason, and chosen records are checked field by field against the raw JSON."""

import json
from collections import Counter

import pytest

from xft.data.formats import to_conversation
from xft.data.pipeline import read_records
from xft.errors import DataError, RecordError


def _map_all(path, fmt):
    """(mapped results by index, rejection reasons by index) for every record of a file."""
    records = read_records(str(path))
    mapped, rejected = {}, {}
    for index, record in enumerate(records):
        try:
            mapped[index] = to_conversation(fmt, record)
        except RecordError as e:
            rejected[index] = str(e)
    return records, mapped, rejected


def _pairs(messages):
    return [(m["role"], m["content"]) for m in messages]


@pytest.mark.parametrize("name, fmt", [("alpaca_en_demo.json", "alpaca"),
                                       ("alpaca_zh_demo.json", "alpaca_zh")])
def test_alpaca_demo_files(shared_data, name, fmt):
    records, mapped, rejected = _map_all(shared_data / "datasets/alpaca" / name, fmt)
    assert rejected == {} and len(mapped) == len(records) > 900
    for index, record in enumerate(records):
        user = record["instruction"] + ("\n" + record["input"] if record["input"] else "")
        assert _pairs(mapped[index]) == [("user", user), ("assistant", record["output"])]
        assert [m["loss"] for m in mapped[index]] == [None, None]
    with_input = next(i for i, r in enumerate(records) if r["input"])
    assert mapped[with_input][0]["content"].endswith("\n" + records[with_input]["input"])


def test_openai_toy_file_rejects_the_records_without_a_user_turn(shared_data):
    records, mapped, rejected = _map_all(shared_data / "datasets/openai/toy_chat_fine_tuning.jsonl",
                                         "openai")
    # Decision: a system prompt followed directly by an assistant reply is a bad record
    # (nothing prompts the reply; OpenAI's own format check flags it the same way).
    no_user = {i for i, r in enumerate(records)
               if not any(m["role"] == "user" for m in r["messages"])}
    assert no_user and set(rejected) == no_user
    assert set(rejected.values()) == {
        "field 'messages': the first non-system message must come from the user"}
    for index, messages in mapped.items():
        raw = records[index]["messages"]
        assert _pairs(messages) == [(m["role"], m["content"]) for m in raw]
        assert all(m["loss"] is None for m in messages)


def test_sharegpt_glaive_toolcall_file(shared_data):
    records, mapped, rejected = _map_all(
        shared_data / "datasets/sharegpt/glaive_toolcall_en_demo.json", "sharegpt")
    assert rejected == {} and len(mapped) == len(records) == 300
    for index, record in enumerate(records):
        messages, turns = mapped[index], record["conversations"]
        tools = json.loads(record["tools"])
        body = messages[1:] if tools else messages
        if tools:
            assert messages[0]["content"] is None
            assert [t["function"] for t in messages[0]["tools"]] == tools
        assert len(body) == len(turns)
        for message, turn in zip(body, turns):
            role = {"human": "user", "gpt": "assistant", "function_call": "assistant",
                    "observation": "tool"}[turn["from"]]
            assert message["role"] == role
            if turn["from"] == "function_call":
                call = json.loads(turn["value"])
                assert message["content"] == ""
                assert message["tool_calls"] == [{"type": "function", "function": {
                    "name": call["name"], "arguments": call["arguments"]}}]
            else:
                assert message["content"] == turn["value"]
    calls = sum(t["from"] == "function_call" for r in records for t in r["conversations"])
    assert calls == sum(bool(m.get("tool_calls")) for ms in mapped.values() for m in ms) > 100


@pytest.mark.slow
def test_glaive_toolcall_file_trains_on_calls_and_replies_with_qwen2_chat(shared_data):
    """Every record builds with its tool definitions; only replies and calls are trained."""
    from transformers import AutoTokenizer

    from xft.config.schema import DataCfg, DatasetCfg, Experiment, ModelCfg
    from conftest import build_dataset
    from xft.data.templates import get_template

    tokenizer = AutoTokenizer.from_pretrained(shared_data / "tokenizers" / "qwen2")
    path = shared_data / "datasets/sharegpt/glaive_toolcall_en_demo.json"
    exp = Experiment(model=ModelCfg(path="xft://tiny-llama"), template="qwen2_chat",
                     datasets=[DatasetCfg(path=str(path), format="sharegpt")],
                     data=DataCfg(max_length=100_000, on_bad_record="skip"))
    dataset, report = build_dataset(exp, tokenizer, get_template("qwen2_chat", tokenizer),
                                    log=lambda _: None)
    records = read_records(str(path))
    assert report.sources[0].skipped_bad == 0 and len(dataset) == len(records) == 300
    for sample, record in zip(dataset.samples, records):
        runs, run = [], []
        for token, label in zip(sample["input_ids"], sample["labels"]):
            if label != -100:
                run.append(token)
            elif run:
                runs.append(tokenizer.decode(run))
                run = []
        # The replies as written in the record: text, or a call in Qwen2.5's <tool_call> form.
        replies = []
        for turn in record["conversations"]:
            if turn["from"] == "gpt":
                replies.append(turn["value"] + "<|im_end|>")
            elif turn["from"] == "function_call":
                call = json.loads(turn["value"])
                replies.append("<tool_call>\n" + json.dumps(
                    {"name": call["name"], "arguments": call["arguments"]}, ensure_ascii=False)
                    + "\n</tool_call><|im_end|>")
        assert runs == replies
        text = tokenizer.decode(sample["input_ids"])
        tools = json.loads(record["tools"])
        # No system prompt in the records: Qwen's default one, followed by the definitions.
        assert text.startswith("<|im_start|>system\nYou are a helpful assistant.")
        assert ("# Tools" in text) == bool(tools)
        assert all(json.dumps(tool, ensure_ascii=False) in text for tool in tools)


def _moss_body(raw, opening, closing):
    text = raw.strip()
    assert text.startswith(opening) and text.endswith(closing)
    return text[len(opening):-len(closing)].strip()


@pytest.mark.parametrize("name", ["moss_003_sft_helpful_sample.jsonl",
                                  "moss_003_sft_no_plugins_sample.jsonl"])
def test_moss_files_without_plugins(shared_data, name):
    records, mapped, rejected = _map_all(shared_data / "datasets/moss" / name, "moss")
    assert rejected == {} and len(mapped) == len(records)
    for index, record in enumerate(records):
        expected = [("system", record["meta_instruction"])]
        for n in range(1, record["num_turns"] + 1):
            turn = record["chat"][f"turn_{n}"]
            expected += [("user", _moss_body(turn["Human"], "<|Human|>:", "<eoh>")),
                         ("assistant", _moss_body(turn["MOSS"], "<|MOSS|>:", "<eom>"))]
        assert _pairs(mapped[index]) == expected
        assert not any("tool_calls" in m or "reasoning_content" in m for m in mapped[index])


def test_moss_plugin_file(shared_data):
    records, mapped, rejected = _map_all(
        shared_data / "datasets/moss/moss_003_sft_plugins_calculator_text2img.jsonl", "moss")
    assert rejected == {} and len(mapped) == len(records) == 200
    roles = Counter(m["role"] for ms in mapped.values() for m in ms)
    commands = [t["Commands"] for r in records for t in r["chat"].values()]
    used = [c for c in commands if _moss_body(c, "<|Commands|>:", "<eoc>").rstrip(".") != "None"]
    assert roles["tool"] == len(used) > 200  # one tool message per turn that ran a plugin
    for messages in mapped.values():
        for m in messages:
            assert m["loss"] is (False if m["role"] == "tool" else None)

    # Record 1, turn 1: a calculator call, its result, the reply; thoughts on the call.
    turn = records[1]["chat"]["turn_1"]
    step, tool, reply = mapped[1][2:5]
    assert step["reasoning_content"] == _moss_body(turn["Inner Thoughts"], "<|Inner Thoughts|>:",
                                                   "<eot>")
    assert step["tool_calls"] == [{"type": "function", "function": {
        "name": "Calculate", "arguments": {"expression": "pi*3^2*20"}}}]
    assert tool["content"] == _moss_body(turn["Tool Responses"], "<|Results|>:", "<eor>")
    assert reply["content"] == _moss_body(turn["MOSS"], "<|MOSS|>:", "<eom>")

    # Record 92, turn 1: a numbered list of three calls with comments → three tool calls.
    calls = mapped[92][2]["tool_calls"]
    assert [c["function"]["arguments"]["expression"] for c in calls] == [
        "20/2", "(4/3)*3.14*(10**3)*(3/5)", "3.14*(10**2)*(3/5)*10"]
    # Record 76, turn 1: "None." commands → no call; the thoughts ride on the reply.
    assert [m["role"] for m in mapped[76][1:3]] == ["user", "assistant"]
    assert mapped[76][2]["reasoning_content"].startswith("这是一道基于知识的数学题")
    # Text-to-image records call Text2Image with its own argument name.
    assert mapped[100][2]["tool_calls"][0]["function"] == {
        "name": "Text2Image", "arguments": {"description": "a painting of the rock"}}


def test_lamini_qa_file(shared_data):
    records, mapped, rejected = _map_all(shared_data / "datasets/lamini/lamini_docs.jsonl", "qa")
    assert rejected == {423: "field 'answer': is empty"}
    assert records[423] == {"question": "### Question:\n\n\n### Answer:", "answer": ""}
    for index, messages in mapped.items():
        raw = records[index]
        assert raw["question"].startswith("### Question:")
        assert messages[0]["content"] == raw["question"][len("### Question:"):-len(
            "### Answer:")].strip()
        assert messages[1]["content"] == raw["answer"]
    # Deliberate empty-input examples are kept with an empty question.
    empty = [i for i, ms in mapped.items() if ms[0]["content"] == ""]
    assert len(empty) == 5 and all("Did you type something" in mapped[i][1]["content"]
                                   for i in empty)


def test_c4_pretrain_file(shared_data):
    records, mapped, rejected = _map_all(shared_data / "datasets/pretrain/c4_demo.jsonl",
                                         "pretrain")
    assert rejected == {} and len(mapped) == 300
    assert all(mapped[i] == r["text"] for i, r in enumerate(records))


def _build(path, fmt, log=lambda _: None, **data):
    from transformers import AutoTokenizer

    from xft.config.schema import DataCfg, DatasetCfg, Experiment, ModelCfg
    from conftest import build_dataset
    from xft.data.templates import get_template
    from xft.paths import resolve_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_path("xft://tiny-llama"))
    exp = Experiment(model=ModelCfg(path="xft://tiny-llama"), template="chatml",
                     datasets=[DatasetCfg(path=str(path), format=fmt)],
                     data=DataCfg(max_length=100_000, **data))
    dataset, report = build_dataset(exp, tokenizer, get_template("chatml", tokenizer), log=log)
    return tokenizer, dataset, report.sources[0]


def test_moss_replies_are_the_trained_tokens(shared_data):
    path = shared_data / "datasets/moss/moss_003_sft_no_plugins_sample.jsonl"
    tokenizer, dataset, report = _build(path, "moss")
    records = read_records(str(path))
    assert len(dataset) == len(records) == report.records
    for sample, record in list(zip(dataset.samples, records))[:20]:
        trained, run = [], []
        for token, label in zip(sample["input_ids"], sample["labels"]):
            if label != -100:
                run.append(token)
            elif run:
                trained.append(tokenizer.decode(run))
                run = []
        replies = [_moss_body(record["chat"][f"turn_{n}"]["MOSS"], "<|MOSS|>:", "<eom>")
                   for n in range(1, record["num_turns"] + 1)]
        assert trained == [r + "<|im_end|>" for r in replies]


def test_moss_plugin_records_are_rejected_by_a_template_without_tools(shared_data):
    # chatml renders neither thoughts nor tool messages, so every plugin record is
    # rejected with its reason (until a template with tool support is used).
    path = shared_data / "datasets/moss/moss_003_sft_plugins_calculator_text2img.jsonl"
    lines = []
    with pytest.raises(DataError, match="no training samples left"):
        _build(path, "moss", log=lines.append, on_bad_record="skip")
    assert "  bad records skipped: 200" in lines
    reasons = {line.split(" × ", 1)[1]: int(line.split(" × ")[0]) for line in lines
               if " × " in line}
    assert sum(reasons.values()) == 200 and set(reasons) <= {
        "field 'messages[2].reasoning_content': template 'chatml' does not render "
        "reasoning_content",
        "field 'messages[1]': template 'chatml' cannot render assistant tool_calls",
        "field 'messages[3]': template 'chatml' cannot render assistant tool_calls"}
