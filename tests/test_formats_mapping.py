"""Datasets as people have them: XTuner's layout, role/content conversations, declarative
column/tag mapping, and datasets named in a registry (xft's or LLaMA-Factory's)."""

import json

import pytest
from transformers import AutoTokenizer

from xft.config.schema import validate
from xft.data.formats import FieldMapping, to_conversation
from xft.errors import ConfigError, RecordError

# The canonical reading every layout below must give.
TURNS = [("system", "You are Xiaoxi."), ("user", "Who are you?"),
         ("assistant", "I am Xiaoxi, made by the xft team."), ("user", "What do you do?"),
         ("assistant", "I answer questions.")]
OPENAI = {"messages": [{"role": r, "content": c} for r, c in TURNS]}


@pytest.fixture(scope="module")
def tokenizer():
    from xft.paths import resolve_path

    return AutoTokenizer.from_pretrained(resolve_path("xft://tiny-llama"))


def roles_and_text(messages):
    return [(m["role"], m["content"]) for m in messages]


def test_xtuner_homework_layout_multi_turn_with_system():
    """XTuner's personal-assistant homework: {"conversation": [{system, input, output}]}."""
    record = {"conversation": [
        {"system": "You are Xiaoxi.", "input": "Who are you?",
         "output": "I am Xiaoxi, made by the xft team."},
        {"input": "What do you do?", "output": "I answer questions."}]}
    assert roles_and_text(to_conversation("xtuner", record)) == TURNS


def test_xtuner_pretraining_layouts_are_documents():
    assert to_conversation("xtuner_pretrain", {"conversation": [
        {"input": "", "output": "Tuna is an assistant."}]}) == "Tuna is an assistant."
    assert to_conversation("xtuner_pretrain", {"text": "Plain text."}) == "Plain text."


def test_role_content_conversations_read_as_sharegpt():
    """The miniGPT/minimind SFT layout: `conversations` of {role, content}."""
    record = {"conversations": [{"role": r, "content": c} for r, c in TURNS]}
    assert roles_and_text(to_conversation("sharegpt", record)) == TURNS


@pytest.mark.parametrize("fmt,columns,tags,record", [
    ("openai", dict(messages="dialog", role="speaker", content="text"),
     dict(user="human", assistant="bot"),
     {"dialog": [{"speaker": {"user": "human", "assistant": "bot"}.get(r, r), "text": c}
                 for r, c in TURNS]}),
    ("sharegpt", dict(messages="turns", role="who", content="said"),
     dict(user="asker", assistant="helper"),
     {"turns": [{"who": {"user": "asker", "assistant": "helper"}.get(r, r), "said": c}
                for r, c in TURNS]}),
    ("xtuner", dict(conversation="dialogue", input="q", output="a"), {},
     {"dialogue": [{"system": "You are Xiaoxi.", "q": TURNS[1][1], "a": TURNS[2][1]},
                   {"q": TURNS[3][1], "a": TURNS[4][1]}]}),
])
def test_columns_and_tags_map_other_names_onto_a_format(fmt, columns, tags, record):
    mapping = FieldMapping(fmt, columns, tags)
    assert roles_and_text(to_conversation(fmt, record, mapping)) == TURNS
    # Without the mapping the record is unreadable: the mapping does the work.
    with pytest.raises(RecordError):
        to_conversation(fmt, record)


def test_alpaca_columns():
    mapping = FieldMapping("alpaca", dict(instruction="question", output="answer",
                                          system="persona"))
    record = {"persona": "Be brief.", "question": "2+2?", "answer": "4", "id": 7}
    assert roles_and_text(to_conversation("alpaca", record, mapping)) == [
        ("system", "Be brief."), ("user", "2+2?"), ("assistant", "4")]


def test_errors_name_the_records_own_fields_and_keys():
    mapping = FieldMapping("openai", dict(messages="dialog", content="text"))
    with pytest.raises(RecordError) as info:
        to_conversation("openai", {"dialog": [{"role": "user", "txt": "hi"}]}, mapping)
    assert info.value.field == "dialog[0].text"
    with pytest.raises(RecordError) as info:  # XTuner data read as the default alpaca
        to_conversation("alpaca", {"conversation": [{"input": "a", "output": "b"}]})
    message = str(info.value)
    assert "field 'instruction'" in message and "read as format 'alpaca'" in message
    assert "keys: 'conversation'" in message


@pytest.mark.parametrize("fmt,columns,tags,expected", [
    ("openai", dict(mesages="x"), {}, "'columns' of format 'openai' has no 'mesages'; did you "
                                      "mean 'messages'?"),
    ("alpaca", {}, dict(user="human"), "format 'alpaca' takes no 'tags'"),
    ("moss", dict(text="body"), {}, "format 'moss' takes no 'columns'"),
    (len, dict(text="body"), {}, "a format function reads the record itself"),
])
def test_bad_mappings_fail_as_config_errors(fmt, columns, tags, expected):
    with pytest.raises(ConfigError, match=expected.replace("?", r"\?").replace("(", r"\(")):
        FieldMapping(fmt, columns, tags)


# ---------------------------------------------------------------- the dataset registry

def experiment(datasets, **data):
    return validate(dict(model=dict(path="xft://tiny-llama"), template="chatml",
                         datasets=datasets, data=data))


def test_shipped_registry_names_the_shipped_data():
    exp = experiment([dict(name="self_cognition")])
    ds = exp.datasets[0]
    assert ds.path == "xft://data/self_cognition.json" and ds.format == "alpaca"
    assert ds.placeholders == {"name": "Tuna", "author": "the xft team"}
    # Keys beside the name override the entry.
    exp = experiment([dict(name="self_cognition", placeholders=dict(name="Xiaoxi", author="me"),
                           max_samples=3)])
    assert exp.datasets[0].placeholders["name"] == "Xiaoxi" and exp.datasets[0].max_samples == 3


def test_llama_factory_dataset_info_is_read_as_it_is(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mini.json").write_text("[]")
    (tmp_path / "data" / "qa.json").write_text("[]")
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps({
        "minimind": {"file_name": "mini.json", "formatting": "sharegpt",
                     "columns": {"messages": "conversations"},
                     "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                              "assistant_tag": "assistant"}},
        "my_qa": {"file_name": "qa.json", "columns": {"prompt": "q", "response": "a"},
                  "num_samples": 50}}))
    registry = str(tmp_path / "data" / "dataset_info.json")
    exp = experiment([dict(name="minimind"), dict(name="my_qa")], registry=[registry])
    mini, qa = exp.datasets
    assert mini.path == str(tmp_path / "data" / "mini.json") and mini.format == "sharegpt"
    assert mini.columns == {"messages": "conversations", "role": "role", "content": "content"}
    assert mini.tags == {"user": "user", "assistant": "assistant"}
    assert qa.format == "alpaca" and qa.columns == {"instruction": "q", "output": "a"}
    assert qa.max_samples == 50
    record = {"conversations": [{"role": r, "content": c} for r, c in TURNS]}
    assert roles_and_text(to_conversation("sharegpt", record, FieldMapping(
        mini.format, mini.columns, mini.tags))) == TURNS


def test_yaml_registry_in_xfts_keys(tmp_path):
    (tmp_path / "reg.yaml").write_text(
        "homework:\n  path: personal_assistant.json\n  format: xtuner\n")
    (tmp_path / "personal_assistant.json").write_text("[]")
    exp = experiment([dict(name="homework")], registry=[str(tmp_path / "reg.yaml")])
    assert exp.datasets[0].format == "xtuner"
    assert exp.datasets[0].path == str(tmp_path / "personal_assistant.json")


def test_unknown_dataset_name_suggests_a_close_one():
    with pytest.raises(ConfigError, match="no dataset 'self_cognitio' .*did you mean "
                                          "'self_cognition'"):
        experiment([dict(name="self_cognitio")])


def test_unsupported_llama_factory_entries_are_named(tmp_path):
    (tmp_path / "info.json").write_text(json.dumps({"dpo": {"file_name": "d.json",
                                                            "ranking": True}}))
    with pytest.raises(ConfigError, match="entry 'dpo': preference"):
        experiment([dict(name="dpo")], registry=[str(tmp_path / "info.json")])


def test_mapped_layouts_train_exactly_what_the_canonical_layout_trains(tmp_path, tokenizer):
    """Through the whole pipeline (template, tokenizer, cache): the homework layout and a
    mapped layout give the samples the OpenAI layout gives, and the mapping is part of the
    cache key (the same file under two mappings is never confused)."""
    from conftest import build_dataset
    from xft.data.templates import get_template

    homework = [{"conversation": [
        {"system": "You are Xiaoxi.", "input": "Who are you?",
         "output": "I am Xiaoxi, made by the xft team."},
        {"input": "What do you do?", "output": "I answer questions."}]}] * 3
    mapped = [{"dialog": [{"speaker": {"user": "human", "assistant": "bot"}.get(r, r),
                           "text": c} for r, c in TURNS]}] * 3
    files = {}
    for name, records in (("openai", [OPENAI] * 3), ("homework", homework),
                          ("mapped", mapped)):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(records))
    entries = {"openai": dict(format="openai"), "homework": dict(format="xtuner"),
               "mapped": dict(format="openai", columns=dict(messages="dialog", role="speaker",
                                                            content="text"),
                              tags=dict(user="human", assistant="bot"))}
    samples = {}
    for name, entry in entries.items():
        exp = validate(dict(model=dict(path="xft://tiny-llama"), template="chatml",
                            datasets=[dict(path=str(files[name]), **entry)],
                            data=dict(max_length=256, cache_dir=str(tmp_path / "cache"))))
        dataset, _ = build_dataset(exp, tokenizer, get_template("chatml", tokenizer),
                                   log=lambda _: None)
        samples[name] = [dataset[i] for i in range(len(dataset))]
    assert samples["homework"] == samples["openai"] == samples["mapped"]
    # The same bytes read with another role mapping: a cold build, not the cached entry.
    files["mapped"].write_text(json.dumps(mapped))
    exp = validate(dict(model=dict(path="xft://tiny-llama"), template="chatml",
                        datasets=[dict(path=str(files["mapped"]), format="openai",
                                       columns=dict(messages="dialog", role="speaker",
                                                    content="text"),
                                       tags=dict(user="bot", assistant="human"))],
                        data=dict(max_length=256, cache_dir=str(tmp_path / "cache"))))
    with pytest.raises(Exception, match="first non-system message must come from the user"):
        build_dataset(exp, tokenizer, get_template("chatml", tokenizer), log=lambda _: None)
