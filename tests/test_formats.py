"""Format map functions on small hand-written records: mapping, loss flags, tools, bad input."""

import json

import pytest

from xft.data.conversation import check_conversation, with_system
from xft.data.formats import FORMATS, get_format, to_conversation
from xft.errors import ConfigError, RecordError


def _pairs(messages):
    return [(m["role"], m["content"]) for m in messages]


def test_every_format_is_documented_with_an_example():
    for name, fn in FORMATS.items():
        assert "Example" in fn.__doc__, name


def test_alpaca_zh_prefers_the_chinese_fields_and_falls_back_to_plain_ones():
    bilingual = {"instruction": "Give three tips.", "input": "", "output": "1. Eat well.",
                 "instruction_zh": "给出三个小贴士。", "input_zh": "关于健康", "output_zh": "1. 均衡饮食。"}
    assert _pairs(to_conversation("alpaca_zh", bilingual)) == [
        ("user", "给出三个小贴士。\n关于健康"), ("assistant", "1. 均衡饮食。")]
    plain = {"instruction": "识别两个理论。", "input": "", "output": "细胞理论……"}
    assert to_conversation("alpaca_zh", plain) == to_conversation("alpaca", plain)


def test_openai_tool_calls_tools_and_loss_flags():
    record = {"messages": [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "assistant", "content": "It is 18C.", "loss": False},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "You're welcome.", "weight": 1}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]}
    messages = to_conversation("openai", record)
    assert _pairs(messages) == [("system", "You are a weather bot."), ("user", "Weather in Paris?"),
                                ("assistant", ""), ("tool", "18C"), ("assistant", "It is 18C."),
                                ("user", "Thanks"), ("assistant", "You're welcome.")]
    assert messages[0]["tools"] == record["tools"]
    assert messages[2]["tool_calls"] == [{"type": "function", "id": "c1", "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert messages[3]["tool_call_id"] == "c1"
    assert [m["loss"] for m in messages] == [None, None, None, None, False, None, True]


def test_tools_without_a_system_prompt_get_a_placeholder_system_message():
    record = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
              "tools": json.dumps([{"name": "f", "description": "d", "parameters": {}}])}
    messages = to_conversation("sharegpt", record)
    assert messages[0] == {"role": "system", "content": None, "loss": None, "tools": [
        {"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}]}
    # The configured system prompt fills it; an explicit one is kept.
    assert with_system(messages, "Be kind.")[0]["content"] == "Be kind."
    assert with_system(messages, None) is messages
    explicit = dict(record, system="Own prompt.")
    assert with_system(to_conversation("sharegpt", explicit), "Be kind.")[0]["content"] == \
        "Own prompt."


def test_sharegpt_roles_function_calls_and_empty_tools():
    record = {"conversations": [
        {"from": "system", "value": "S"}, {"from": "human", "value": "Find a recipe"},
        {"from": "function_call", "value": json.dumps(
            [{"name": "search", "arguments": {"q": "rice"}}, {"name": "rank", "arguments": {}}])},
        {"from": "observation", "value": "{\"hits\": 2}"}, {"from": "gpt", "value": "Two hits."}],
        "tools": "[]"}
    messages = to_conversation("sharegpt", record)
    assert _pairs(messages) == [("system", "S"), ("user", "Find a recipe"), ("assistant", ""),
                                ("tool", "{\"hits\": 2}"), ("assistant", "Two hits.")]
    assert [c["function"] for c in messages[2]["tool_calls"]] == [
        {"name": "search", "arguments": {"q": "rice"}}, {"name": "rank", "arguments": {}}]
    assert "tools" not in messages[0]


GUANACO = ("### Human: What is a monopsony?### Assistant: A market with one buyer."
           "### Human: An example?  ### Assistant:  A mill town.\n")


@pytest.mark.parametrize("name", ["guanaco", "oasst"])
def test_guanaco_text_becomes_alternating_turns(name):
    assert _pairs(to_conversation(name, {"text": GUANACO})) == [
        ("user", "What is a monopsony?"), ("assistant", "A market with one buyer."),
        ("user", "An example?"), ("assistant", "A mill town.")]


def test_qa_unwraps_a_prompt_wrapped_question_and_keeps_a_plain_one():
    wrapped = {"question": "### Question:\nWhat is Lamini?\n\n### Answer:", "answer": "An engine."}
    assert _pairs(to_conversation("qa", wrapped)) == [("user", "What is Lamini?"),
                                                     ("assistant", "An engine.")]
    plain = {"question": "What is 2+2?", "answer": "4"}
    assert _pairs(to_conversation("qa", plain)) == [("user", "What is 2+2?"), ("assistant", "4")]


def test_pretrain_returns_the_text_as_a_document():
    assert to_conversation("pretrain", {"text": "Some web page.\nMore."}) == "Some web page.\nMore."


MOSS_META = ("You are MOSS.\nCapabilities and tools that MOSS can possess.\n"
             "- Inner thoughts: enabled.\n- Web search: disabled.\n"
             "- Calculator: enabled. API: Calculate(expression)\n- Text-to-image: disabled.\n")


def _moss_turn(human, thoughts="None", commands="None", results="None", reply="Hi"):
    return {"Human": f"<|Human|>: {human}<eoh>\n",
            "Inner Thoughts": f"<|Inner Thoughts|>: {thoughts}<eot>\n",
            "Commands": f"<|Commands|>: {commands}<eoc>\n",
            "Tool Responses": f"<|Results|>:\n{results}\n<eor>\n",
            "MOSS": f"<|MOSS|>: {reply}<eom>\n"}


def _moss(*turns, meta=MOSS_META):
    return {"meta_instruction": meta, "num_turns": len(turns),
            "chat": {f"turn_{i + 1}": t for i, t in enumerate(turns)}}


def test_moss_thoughts_commands_and_results():
    record = _moss(
        _moss_turn("Hello", reply="Hello! How can I help?"),
        _moss_turn("What is 3*(2+1)?", thoughts="Use the calculator.",
                   commands='1. Calculate("3*(2+1)")  # product\n2. Calculate("9/3")',
                   results="Calculate(\"3*(2+1)\") => '9'\nCalculate(\"9/3\") => '3.0'",
                   reply="It is 9."),
        _moss_turn("And 1+1?", thoughts="Easy, no tool needed.", reply="2."))
    messages = to_conversation("moss", record)
    assert _pairs(messages) == [
        ("system", MOSS_META), ("user", "Hello"), ("assistant", "Hello! How can I help?"),
        ("user", "What is 3*(2+1)?"), ("assistant", ""),
        ("tool", "Calculate(\"3*(2+1)\") => '9'\nCalculate(\"9/3\") => '3.0'"),
        ("assistant", "It is 9."), ("user", "And 1+1?"), ("assistant", "2.")]
    step = messages[4]
    assert step["reasoning_content"] == "Use the calculator."
    assert [c["function"] for c in step["tool_calls"]] == [
        {"name": "Calculate", "arguments": {"expression": "3*(2+1)"}},
        {"name": "Calculate", "arguments": {"expression": "9/3"}}]
    assert [m["loss"] for m in messages] == [None] * 5 + [False] + [None] * 3
    # Thoughts are on the plugin-calling step, or on the reply when no plugin is called.
    assert "reasoning_content" not in messages[6]
    assert messages[8]["reasoning_content"] == "Easy, no tool needed."
    assert "reasoning_content" not in messages[2] and "tool_calls" not in messages[8]


MOSS_BAD = [
    (_moss(_moss_turn("q", thoughts="I think", reply="a"),
           meta=MOSS_META.replace("Inner thoughts: enabled", "Inner thoughts: disabled")),
     "chat.turn_1.Inner Thoughts", "Inner thoughts: disabled"),
    (_moss(_moss_turn("q", commands='Text2Image("a cat")', results="done", reply="a")),
     "chat.turn_1.Commands", "not enable (enabled: Calculate)"),
    (_moss(_moss_turn("q", commands='Calculate("1+1")', reply="a")),
     "chat.turn_1.Tool Responses", "no tool responses"),
    (_moss(_moss_turn("q", commands='Calculate("1+(1"', results="x", reply="a")),
     "chat.turn_1.Commands", "unbalanced parentheses"),
    (dict(_moss(_moss_turn("q")), num_turns=2), "num_turns", "chat has 1 turns"),
    (_moss(dict(_moss_turn("q"), Human="Human: q")), "chat.turn_1.Human", "must look like"),
    (_moss(_moss_turn("q", reply="None")), "chat.turn_1.MOSS", "is empty"),
    ({"meta_instruction": "m", "num_turns": 1, "caht": {}}, "chat", "did you mean 'chat'"),
]


@pytest.mark.parametrize("record, field, reason", MOSS_BAD)
def test_moss_bad_records_name_the_field(record, field, reason):
    with pytest.raises(RecordError) as info:
        to_conversation("moss", record)
    assert info.value.field == field and reason in info.value.reason


def test_misspelled_field_suggests_the_expected_name():
    with pytest.raises(RecordError) as info:
        to_conversation("alpaca", {"instrution": "q", "output": "a"})
    assert info.value.field == "instruction"
    assert "did you mean 'instruction' (the record has 'instrution')" in info.value.reason
    with pytest.raises(RecordError) as info:
        to_conversation("openai", {"messages": [{"rol": "user", "content": "q"}]})
    assert info.value.field == "messages[0].role" and "'rol'" in info.value.reason


@pytest.mark.parametrize("fmt, record, field, reason", [
    ("sharegpt", {"conversations": [{"from": "robot", "value": "x"}]}, "conversations[0].from",
     "unknown speaker 'robot'"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"},
                                    {"from": "function_call", "value": "not json"}]},
     "conversations[1].value", "must be JSON"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"},
                                    {"from": "observation", "value": "r"}]},
     "messages[1].role", "must follow an assistant message with tool_calls"),
    ("sharegpt", {"conversations": [{"from": "gpt", "value": "a"}]}, "messages",
     "first non-system message must come from the user"),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"},
                                    {"from": "gpt", "value": "a"}], "tools": "[{"},
     "tools", "not valid JSON"),
    ("openai", {"messages": [{"role": "user", "content": "q"}, {
        "role": "assistant", "content": None,
        "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]},
     "messages[1].tool_calls[0].function", "arguments must be an object, got list"),
    ("openai", {"messages": [{"role": "user", "content": "q"},
                             {"role": "assistant", "content": "a", "loss": "no"}]},
     "messages[1].loss", "loss must be true, false or null"),
    ("openai", {"messages": [{"role": "user", "content": "q"},
                             {"role": "assistant", "content": " "}]},
     "messages[1].content", "assistant message is empty"),
    ("guanaco", {"text": "### Assistant: hi"}, "text", "'### Human:' was expected"),
    ("guanaco", {"text": "Hello ### Human: hi"}, "text", "must start with '### Human:'"),
    ("guanaco", {"text": "### Human: hi### Assistant:   "}, "text",
     "turn 2 ('### Assistant:') is empty"),
    ("guanaco", {"text": "no markers at all"}, "text", "must start with '### Human:'"),
    ("qa", {"question": "q", "answer": ""}, "answer", "is empty"),
    ("qa", {"question": "q", "anwser": "a"}, "answer", "did you mean 'answer'"),
    ("pretrain", {"text": "   "}, "text", "is empty"),
    ("pretrain", {"txt": "x"}, "text", "did you mean 'text'"),
    ("pretrain", {"text": 5}, "text", "must be a string, got int"),
])
def test_bad_records_name_the_field(fmt, record, field, reason):
    with pytest.raises(RecordError) as info:
        to_conversation(fmt, record)
    assert info.value.field == field and reason in info.value.reason


def test_unknown_format_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown dataset format 'sharegtp'; did you mean "
                                          "'sharegpt'"):
        get_format("sharegtp")


def test_custom_map_function_is_used_and_checked():
    def my_fn(record):
        return [{"role": "user", "content": record["q"]},
                {"role": "assistant", "content": record["a"]}]

    assert get_format(my_fn) is my_fn
    assert _pairs(to_conversation(my_fn, {"q": "x", "a": "y"})) == [("user", "x"),
                                                                  ("assistant", "y")]
    with pytest.raises(RecordError, match="must return a list of messages or a str document"):
        to_conversation(lambda r: {"role": "user"}, {"q": 1})


def test_check_conversation_rejects_tool_fields_in_the_wrong_place():
    call = {"type": "function", "function": {"name": "f", "arguments": {}}}
    with pytest.raises(RecordError, match="only an assistant message may carry tool_calls"):
        check_conversation([{"role": "user", "content": "q", "tool_calls": [call]}])
    with pytest.raises(RecordError, match="only a system message may carry tools"):
        check_conversation([{"role": "user", "content": "q", "tools": [call]},
                            {"role": "assistant", "content": "a"}])
    with pytest.raises(RecordError, match="content must be a string, got NoneType"):
        check_conversation([{"role": "system", "content": None},
                            {"role": "user", "content": "q"},
                            {"role": "assistant", "content": "a"}])


def test_check_rendered_accepts_a_rendering_that_shows_every_part():
    from xft.data.conversation import check_rendered

    messages = to_conversation("moss", _moss(_moss_turn(
        "1+1?", thoughts="Use it.", commands='Calculate("1+1")', results="2", reply="2")))
    check_rendered(messages, lambda ms: json.dumps(ms), "shows-all")  # every part is in the text

    def no_thoughts(ms):
        return json.dumps([{k: v for k, v in m.items() if k != "reasoning_content"} for m in ms])

    with pytest.raises(RecordError) as info:
        check_rendered(messages, no_thoughts, "plain")
    assert info.value.field == "messages[2].reasoning_content"
    assert info.value.reason == "template 'plain' does not render reasoning_content"


def test_openai_optional_fields_as_the_api_defines_them():
    openai = FORMATS["openai"]
    record = {"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be "}, {"type": "text",
                                                                          "text": "brief."}]},
        {"role": "user", "content": "Weather?", "name": "alice"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_weather", "arguments": "{}"}}], "refusal": None},
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "sunny"},
        {"role": "assistant", "content": "Sunny.", "tool_calls": None, "function_call": None,
         "reasoning_content": "It said sunny."},
        {"role": "user", "content": "Thanks", "tool_calls": []},
        {"role": "assistant", "content": "Welcome.", "reasoning_content": None}]}
    messages = openai(record)
    check_conversation(messages)
    assert messages[0]["content"] == "Be brief."
    assert "name" not in messages[1] and messages[3]["name"] == "get_weather"
    assert messages[2]["content"] == "" and messages[2]["tool_calls"][0]["id"] == "c1"
    assert "tool_calls" not in messages[4] and messages[4]["reasoning_content"] == "It said sunny."
    assert "tool_calls" not in messages[5] and "reasoning_content" not in messages[6]
    with pytest.raises(RecordError, match="only text parts") as e:
        openai({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})
    assert e.value.field == "messages[0].content[0].type"
    with pytest.raises(RecordError, match="missing field") as e:
        openai({"messages": [{"role": "user"}]})
    assert e.value.field == "messages[0].content"
