"""The `moss` template against MOSS-003's own data: the raw records are the reference.

MOSS ships no chat_template, so the check is the other way round: a record mapped by the
`moss` format and rendered by the `moss` template must give back the record's own tagged
strings, and its trained tokens must be exactly what MOSS writes (thoughts, commands,
replies), never the human's turns, the plugin results or the meta_instruction.
"""

import re
from functools import lru_cache
from pathlib import Path

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from xft.data.encode import IGNORE_INDEX, encode_conversations
from xft.data.formats import to_conversation
from xft.data.formats.moss import PARTS
from xft.data.pipeline import read_records
from xft.data.templates import get_template, template_spec
from xft.errors import RecordError
from xft.paths import resolve_path

FILES = ["moss_003_sft_helpful_sample.jsonl", "moss_003_sft_no_plugins_sample.jsonl",
         "moss_003_sft_plugins_calculator_text2img.jsonl"]
PLUGINS = FILES[2]
TAGS = ["<|Human|>", "<|Inner Thoughts|>", "<|Commands|>", "<|Results|>", "<|MOSS|>",
        "<eoh>", "<eot>", "<eoc>", "<eor>", "<eom>"]


@lru_cache(maxsize=None)
def tag_tokenizer():
    """xft's tiny tokenizer with every MOSS tag as one special token."""
    backend = Tokenizer.from_file(str(Path(resolve_path("xft://tiny-llama")) / "tokenizer.json"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                   additional_special_tokens=TAGS)


def _inner(raw, part):
    opening, closing = PARTS[part]
    text = raw.strip()
    return text[len(opening):-len(closing)].strip()


def _is_none(raw, part):
    return _inner(raw, part).rstrip(".") == "None"


def _turns(record):
    return [record["chat"][f"turn_{n}"] for n in range(1, record["num_turns"] + 1)]


def _records(shared_data, name):
    return read_records(str(shared_data / "datasets/moss" / name))


def _trained_and_untrained(tokenizer, sample):
    runs, current, untrained = [], [], []
    for token, label in zip(sample["input_ids"], sample["labels"]):
        if label != IGNORE_INDEX:
            current.append(token)
            continue
        untrained.append(token)
        if current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs, tokenizer.decode(untrained)


# ------------------------------------------------------------------ to_jinja == render

CHAT = [
    {"role": "system", "content": "You are MOSS.\n- Calculator: enabled. API: Calculate(x)\n"},
    {"role": "user", "content": "2+3 and 4*5?"},
    {"role": "assistant", "content": "", "reasoning_content": "I should calculate.",
     "tool_calls": [{"type": "function", "function": {"name": "Calculate",
                                                      "arguments": {"x": "2+3"}}},
                    {"type": "function", "function": {"name": "Calculate",
                                                      "arguments": {"x": '"4" + "*5"'}}}]},
    {"role": "tool", "content": "Calculate(\"2+3\") => '5'", "loss": False},
    {"role": "assistant", "content": "5 and 20."},
    {"role": "user", "content": "Thanks"},
    {"role": "assistant", "content": "You're welcome.", "reasoning_content": "Be polite."},
    {"role": "user", "content": "Draw a cat"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "Text2Image",
                                          "arguments": {"description": "a cat"}}}]},
    {"role": "tool", "content": "<|Image_1|>"},
    {"role": "assistant", "content": "Here it is."},
]


def test_moss_renders_its_tagged_format():
    text = get_template("moss", tag_tokenizer()).render(CHAT).text
    assert text == (
        CHAT[0]["content"]
        + "<|Human|>: 2+3 and 4*5?<eoh>\n"
        + "<|Inner Thoughts|>: I should calculate.<eot>\n"
        + '<|Commands|>: Calculate("2+3"), Calculate("4" + "*5")<eoc>\n'
        + "<|Results|>:\nCalculate(\"2+3\") => '5'\n<eor>\n"
        + "<|MOSS|>: 5 and 20.<eom>\n"
        + "<|Human|>: Thanks<eoh>\n<|Inner Thoughts|>: Be polite.<eot>\n"
        + "<|MOSS|>: You're welcome.<eom>\n"
        + "<|Human|>: Draw a cat<eoh>\n"
        + '<|Commands|>: Text2Image("a cat")<eoc>\n<|Results|>:\n<|Image_1|>\n<eor>\n'
        + "<|MOSS|>: Here it is.<eom>\n")


@pytest.mark.parametrize("upto", range(1, len(CHAT) + 1))
def test_moss_to_jinja_renders_what_render_renders(upto):
    tokenizer = tag_tokenizer()
    template = get_template("moss", tokenizer)
    jinja = template.to_jinja()
    for gen in (False, True):
        got = tokenizer.apply_chat_template(CHAT[:upto], chat_template=jinja, tokenize=False,
                                            add_generation_prompt=gen)
        assert got == template.render(CHAT[:upto], gen).text


def test_moss_to_jinja_on_every_plugin_record(shared_data):
    tokenizer = tag_tokenizer()
    template = get_template("moss", tokenizer)
    jinja = template.to_jinja()
    for record in _records(shared_data, PLUGINS):
        messages = to_conversation("moss", record)
        got = tokenizer.apply_chat_template(messages, chat_template=jinja, tokenize=False)
        assert got == template.render(messages).text


@pytest.mark.parametrize("arguments", [{}, {"a": "1", "b": "2"}, {"a": 1}])
def test_moss_commands_take_one_string_argument(arguments):
    chat = CHAT[:2] + [{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "Calculate", "arguments": arguments}}]}]
    with pytest.raises(RecordError, match="exactly one string argument"):
        get_template("moss", tag_tokenizer()).render(chat)
    with pytest.raises(Exception, match="exactly one string argument"):
        tag_tokenizer().apply_chat_template(chat, chat_template=template_spec("moss").to_jinja(),
                                            tokenize=False)


# ------------------------------------------------------------------- the real MOSS files

@pytest.mark.parametrize("name", FILES)
@pytest.mark.slow
def test_every_moss_record_builds_with_the_moss_template(shared_data, name):
    from xft.config.schema import DataCfg, DatasetCfg, Experiment, ModelCfg
    from conftest import build_dataset

    # moss.py rejects a record whose thoughts or commands break its meta_instruction's
    # plugin switches; none of the three sample files has such a record, so every record
    # must build (on_bad_record='error' fails on the first bad one).
    path = shared_data / "datasets/moss" / name
    tokenizer = AutoTokenizer.from_pretrained(resolve_path("xft://tiny-llama"))
    exp = Experiment(model=ModelCfg(path="xft://tiny-llama"), template="moss",
                     datasets=[DatasetCfg(path=str(path), format="moss")],
                     data=DataCfg(max_length=100_000, on_bad_record="error"))
    dataset, report = build_dataset(exp, tokenizer, get_template("moss", tokenizer))
    assert len(dataset) == report.sources[0].records == len(read_records(str(path)))


def _raw_reference(record):
    """The record's own strings: meta_instruction, then each turn's non-"None" parts verbatim."""
    return record["meta_instruction"] + "".join(
        raw for turn in _turns(record) for part, raw in turn.items() if not _is_none(raw, part))


def _canonical(raw, part):
    """Whether a raw part has the layout the template writes (moss.py strips the content)."""
    opening, closing = PARTS[part]
    sep = "\n" if part == "Tool Responses" else " "
    return raw == opening + sep + _inner(raw, part) + ("\n" if sep == "\n" else "") + closing + "\n"


# Record 92 of the plugin file writes its commands as a numbered list with comments; moss.py
# keeps only the calls, so its Commands render as 'Calculate(...), Calculate(...)'.
COMMENTED_COMMANDS = {PLUGINS: {92}}
# Record 19 of the plugin file separates two calls with ' , '; they render with ', '.
RESPACED_COMMANDS = {PLUGINS: {19}}


@pytest.mark.parametrize("name", FILES)
def test_rendered_text_is_the_raw_moss_strings(shared_data, name):
    template = get_template("moss", tag_tokenizer())
    exact = 0
    for index, record in enumerate(_records(shared_data, name)):
        text = template.render(to_conversation("moss", record)).text
        reference = _raw_reference(record)
        if index in COMMENTED_COMMANDS.get(name, ()):
            # All but the commands' text is the record's own.
            drop = re.compile(r"<\|Commands\|>:.*?<eoc>\n", re.S)
            text, reference = drop.sub("", text), drop.sub("", reference)
            assert text == reference
            continue
        if index not in RESPACED_COMMANDS.get(name, ()) and all(
                _canonical(raw, part) for turn in _turns(record) for part, raw in turn.items()
               if not _is_none(raw, part)):
            assert text == reference, index
            exact += 1
        else:  # whitespace just inside the tags differs, nothing else
            assert re.sub(r"\s", "", text) == re.sub(r"\s", "", reference), index
    # How many records already have the template's layout, hence render byte for byte. The
    # rest differ in whitespace only: trailing spaces or blank lines that moss.py strips, and
    # the Text2Image records' one-line '<|Results|>: ...<eor>'.
    assert exact == {FILES[0]: 76, FILES[1]: 109, PLUGINS: 98}[name]


@pytest.mark.parametrize("name, indices", [(PLUGINS, [1, 3, 76, 100, 150]),
                                           (FILES[0], [0, 1]), (FILES[1], [0])])
def test_trained_tokens_are_what_moss_writes(shared_data, name, indices):
    tokenizer = tag_tokenizer()
    template = get_template("moss", tokenizer)
    records = _records(shared_data, name)
    for index in indices:
        record = records[index]
        samples, _ = encode_conversations([to_conversation("moss", record)], template,
                                          tokenizer, 100_000)
        runs, untrained = _trained_and_untrained(tokenizer, samples[0])
        expected = []
        for turn in _turns(record):
            thoughts = ("" if _is_none(turn["Inner Thoughts"], "Inner Thoughts")
                        else turn["Inner Thoughts"].strip() + "\n")
            if not _is_none(turn["Commands"], "Commands"):
                expected.append(thoughts + turn["Commands"].strip())
                assert _inner(turn["Tool Responses"], "Tool Responses") in untrained
            elif thoughts:
                expected.append(thoughts)
            expected.append(_inner(turn["MOSS"], "MOSS") + "<eom>")
            assert _inner(turn["Human"], "Human") in untrained
        assert [run.strip(" ") for run in runs] == expected, index
        assert record["meta_instruction"] in untrained
        assert not any(tag in run for run in runs for tag in ("<|Human|>", "<eoh>", "<|Results|>",
                                                              "<eor>", "<|MOSS|>"))
