"""Tools end to end for the families whose official template renders them: definitions,
calls and results as the official jinja writes them (text and token ids), the calls
trained and nothing else of them, and each reply parsed back into the same calls by the
one parser `xft chat` and `xft serve` use (xft.data.templates.tool_calls)."""

import json

import pytest
from conftest import family_tokenizer, successor_model
from test_templates import (CONVERSATIONS, SYSTEM, TOOLS, _trained_runs, glm4_finetune_sample,
                            hf_form, jinja_render, reference, tool_chat, tool_defs_chats)

from xft.data.encode import encode_conversations
from xft.data.templates import get_template
from xft.data.templates.tool_calls import TOOL_CALL_STYLES, parse_tool_calls
from xft.errors import RecordError
from xft.inference.chat import ChatSession
from xft.serve.tool_calls import openai_tool_calls

# (template, reference jinja, extra apply_chat_template arguments). Llama 3.2's template
# prints today's date unless given one; xft's is Llama 3.1's fixed default.
OFFICIAL = [("llama3_1", "llama3_1", {}),
            ("llama3_1", "llama3_2", {"date_string": "26 Jul 2024"}),
            ("mistral_v7", "mistral_v7", {})]


def _with_system(name, messages):
    """Mistral v7's official template adds a dated default system prompt where there is none
    (xft does not, test_templates.py), so its conversations here carry one."""
    if name != "mistral_v7" or messages[0]["role"] == "system":
        return messages
    return [SYSTEM] + messages


def _fill_placeholder_system(name, messages):
    if name == "mistral_v7" and messages[0]["role"] == "system" and messages[0]["content"] is None:
        return [dict(messages[0], content=SYSTEM["content"])] + messages[1:]
    return messages


@pytest.mark.parametrize("name, ref, extra", OFFICIAL, ids=[r for _, r, _ in OFFICIAL])
def test_tool_conversations_equal_the_official_template(name, ref, extra):
    tokenizer = family_tokenizer(name)
    template = get_template(name, tokenizer)
    chats = [_with_system(name, tool_chat(name))]
    chats += [_fill_placeholder_system(name, m) for m in tool_defs_chats(name).values()]
    for messages in chats:
        for msgs, gen in [(messages, False), (messages[:-1], True)]:
            hf_msgs, tools = hf_form(msgs)
            expected = tokenizer.apply_chat_template(
                hf_msgs, chat_template=reference(ref), tools=tools, tokenize=False,
                add_generation_prompt=gen, **extra)
            assert template.render(msgs, gen).text == expected
        samples, _ = encode_conversations([messages], template, tokenizer, 4096)
        hf_msgs, tools = hf_form(messages)
        ids = tokenizer.apply_chat_template(hf_msgs, chat_template=reference(ref), tools=tools,
                                            tokenize=True, **extra)["input_ids"]
        assert samples[0]["input_ids"] == list(ids)


def glm4_native(messages):
    """A conversation as GLM-4's own messages, the mapping of its OpenAI server
    (THUDM/GLM-4 basic_demo/openai_api_server.py): the tool definitions on a system message
    (its `tools`), each call an assistant message whose `metadata` is the function name and
    whose content is the JSON arguments, each result an 'observation' message."""
    native = []
    for msg in messages:
        if msg.get("tool_calls"):
            native += [{"role": "assistant", "metadata": call["function"]["name"],
                        "content": json.dumps(call["function"]["arguments"], ensure_ascii=False)}
                       for call in msg["tool_calls"]]
        elif msg["role"] == "tool":
            native.append({"role": "observation", "content": msg["content"]})
        else:
            native.append(msg)
    return native


def _glm4_tool_chats():
    return [tool_chat("glm4"), *tool_defs_chats("glm4").values()]


def test_glm4_tool_conversations_equal_the_official_template():
    # GLM-4's template takes tools only on a message (`tools=` reaches no part of it), so the
    # reference renders GLM-4's own messages; xft closes a conversation with '<|user|>'.
    tokenizer = family_tokenizer("glm4")
    template = get_template("glm4", tokenizer)
    for messages in _glm4_tool_chats():
        for msgs, gen in [(messages, False), (messages[:-1], True)]:
            expected = jinja_render(tokenizer, reference("glm4"), glm4_native(msgs), gen)
            assert template.render(msgs, gen).text == expected + ("" if gen else "<|user|>")
        samples, _ = encode_conversations([messages], template, tokenizer, 4096)
        ids = jinja_render(tokenizer, reference("glm4"), glm4_native(messages), tokenize=True)
        assert samples[0]["input_ids"] == ids + tokenizer.convert_tokens_to_ids(["<|user|>"])


@pytest.mark.parametrize("messages", _glm4_tool_chats(), ids=["calls", "tool_defs",
                                                               "tool_defs_system", "plain"])
def test_glm4_tool_labels_equal_glm4s_own_finetuning_script(messages):
    # THUDM/GLM-4 finetune_demo/finetune.py on GLM-4's own messages: each rendered alone
    # (less its [gMASK]<sop>), assistant ones trained, '<|user|>' appended, the masks shifted
    # right by one; so a call is trained from its name to the '<|observation|>' after it.
    tokenizer = family_tokenizer("glm4")
    samples, _ = encode_conversations([messages], get_template("glm4", tokenizer), tokenizer,
                                      4096)
    ids, labels = glm4_finetune_sample(tokenizer, glm4_native(messages))
    assert samples[0]["input_ids"] == ids
    assert samples[0]["labels"] == labels


def test_glm4_reads_a_call_only_where_a_reply_does_not_open_with_its_line_break():
    template = get_template("glm4", family_tokenizer("glm4"))
    assert template.parse_reply('get_weather\n{"city": "Paris"}') == {
        "role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather",
                                              "arguments": {"city": "Paris"}}}]}
    # A plain reply opens with the line break after '<|assistant|>', whatever follows it.
    assert template.parse_reply('\nget_weather\n{"city": "Paris"}') == {
        "role": "assistant", "content": 'get_weather\n{"city": "Paris"}'}
    assert "tool_calls" not in template.parse_reply("Paris is sunny.\nOr is it?")


@pytest.mark.parametrize("ref, extra", [("llama3_1", {}),
                                        ("llama3_2", {"date_string": "26 Jul 2024"})])
def test_llama3_1_plain_conversations_equal_llama_3_1_and_3_2(ref, extra):
    tokenizer = family_tokenizer("llama3_1")
    template = get_template("llama3_1", tokenizer)
    for messages in CONVERSATIONS.values():
        for msgs, gen in [(messages, False), (messages[:-1], True)]:
            assert template.render(msgs, gen).text == tokenizer.apply_chat_template(
                msgs, chat_template=reference(ref), tokenize=False, add_generation_prompt=gen,
                **extra)


def test_llama3_1_trains_the_call_and_its_eot_and_writes_results_as_ipython_json():
    tokenizer = family_tokenizer("llama3_1")
    template = get_template("llama3_1", tokenizer)
    messages = tool_defs_chats("llama3_1")["tool_defs_system"]
    text = template.render(messages).text
    assert "Environment: ipython\nCutting Knowledge Date" in text
    # The result, a string, is written as a JSON string (the official `is iterable` quirk).
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n"{\\"temp\\": 21}"<|eot_id|>' in text
    samples, _ = encode_conversations([messages], template, tokenizer, 4096)
    runs = _trained_runs(tokenizer, samples[0])
    assert runs == ['{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>',
                    '{"name": "get_weather", "parameters": {"city": "Rome"}}<|eot_id|>',
                    "Paris 21 °C, Rome 25 °C.<|eot_id|>"]


def test_mistral_v7_trains_the_calls_and_eos_not_the_results():
    tokenizer = family_tokenizer("mistral_v7")
    template = get_template("mistral_v7", tokenizer)
    samples, _ = encode_conversations([tool_chat("mistral_v7")], template, tokenizer, 4096)
    runs = _trained_runs(tokenizer, samples[0])
    assert runs == ['[TOOL_CALLS]get_weather[CALL_ID]call12345[ARGS]{"city": "Paris"}'
                    '[TOOL_CALLS]get_weather[CALL_ID]call67890[ARGS]{"city": "Rome"}</s>',
                    "Paris 21 °C, Rome 25 °C.</s>"]


@pytest.mark.parametrize("name, bad, match", [
    ("llama3_1", dict(tool_chat("qwen2_chat")[1]), "exactly one tool call"),
    ("llama3_1", dict(tool_chat("llama3_1")[1], content="Let me see."), "text besides"),
    ("mistral_v7", dict(tool_chat("mistral_v7")[1], content="Let me see."), "text besides"),
    ("glm4", dict(tool_chat("glm4")[1], content="Let me see."), "text besides"),
])
def test_calls_the_official_template_cannot_render_are_refused(name, bad, match):
    template = get_template(name, family_tokenizer(name))
    messages = [tool_chat(name)[0], bad]
    with pytest.raises(RecordError, match=match):
        template.render(messages)
    with pytest.raises(Exception, match=match):
        jinja_render(family_tokenizer(name), template.to_jinja(), messages)


def test_llama3_1_tool_definitions_need_a_first_user_message():
    template = get_template("llama3_1", family_tokenizer("llama3_1"))
    messages = [{"role": "system", "content": None, "tools": TOOLS},
                {"role": "assistant", "content": "Hi."}]
    with pytest.raises(RecordError, match="first user message"):
        template.render(messages)


# One call per reply for Llama 3.1, several for the others; ids where the style writes them.
CALLS = [{"id": "xyz123456", "type": "function",
          "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
         {"id": "jklmnopqr", "type": "function",
          "function": {"name": "get_time", "arguments": {"zone": "CET", "n": [1, 2]}}}]
STYLES = {"qwen2_chat": CALLS, "qwen3": CALLS, "mistral_v3": CALLS, "mistral_v7": CALLS,
          "llama3_1": CALLS[:1], "glm4": CALLS}


@pytest.mark.parametrize("name", sorted(STYLES))
def test_parse_reply_reads_back_the_calls_the_template_trains(name):
    tokenizer = family_tokenizer("mistral" if name == "mistral_v3" else name)
    template = get_template(name, tokenizer)
    message = {"role": "assistant", "content": "", "tool_calls": STYLES[name]}
    rendered = template.render([{"role": "user", "content": "Weather?"}, message])
    # The reply's trained text (GLM-4's closing '<|user|>' a span of its own), less its end.
    generated = "".join(rendered.text[start:end] for start, end in rendered.loss_spans)
    for marker in (tokenizer.eos_token, "<|im_end|>", "<|eot_id|>", "<|user|>"):
        generated = generated.removesuffix(marker)
    parsed = template.parse_reply(generated)
    keeps_ids = name.startswith("mistral")
    assert parsed["tool_calls"] == [c if keeps_ids else {k: v for k, v in c.items() if k != "id"}
                                    for c in STYLES[name]]
    assert parsed["content"] == ""
    # The server reads the same text through the same parse_reply, shaped for OpenAI.
    content, openai_calls = openai_tool_calls(template, generated)
    assert content is None and [(c["function"]["name"], json.loads(c["function"]["arguments"]))
                                for c in openai_calls] == [
        (c["function"]["name"], c["function"]["arguments"]) for c in STYLES[name]]
    # Text that is not a call in this style stays text.
    assert "tool_calls" not in template.parse_reply("It is sunny.")
    broken = generated.replace("}", "", 1)  # the first call's JSON is broken
    assert "tool_calls" not in template.parse_reply(broken)
    assert parse_tool_calls(template.tool_calls, broken) is None


def test_every_style_with_a_parser_is_exercised():
    parsable = {style for style, spec in TOOL_CALL_STYLES.items() if spec.parse}
    tested = {get_template(n, family_tokenizer("mistral" if n == "mistral_v3" else n)).tool_calls
              for n in STYLES}
    assert parsable == tested


def _session_scripted_to_call(name, call):
    """A ChatSession whose model (a successor model) answers 'Weather?' with exactly the
    tokens the template trains for a reply making `call`."""
    tokenizer = family_tokenizer(name)
    template = get_template(name, tokenizer)
    question = [{"role": "user", "content": "Weather?"}]
    prompt = template.render(question, add_generation_prompt=True).text
    whole = template.render(question + [{"role": "assistant", "content": "",
                                         "tool_calls": [call]}]).text
    reply = tokenizer(whole[len(prompt):], add_special_tokens=False)["input_ids"]
    chain = tokenizer(prompt, add_special_tokens=False)["input_ids"][-1:] + reply
    assert len(set(chain)) == len(chain)  # a successor model can script it
    model = successor_model(len(tokenizer), dict(zip(chain, chain[1:])), tokenizer.eos_token_id)
    return ChatSession(model, tokenizer, template, max_new_tokens=len(reply) + 4)


@pytest.mark.slow
def test_chat_reads_a_call_written_in_control_tokens_back_into_its_history():
    """Mistral v7 writes calls with control tokens ([TOOL_CALLS], [CALL_ID], [ARGS]) that the
    shown answer drops: `xft chat` parses the generated text with them kept, and the call
    goes into the history as the template renders it."""
    call = {"id": "xyz123456", "type": "function",
            "function": {"name": "f", "arguments": {}}}
    session = _session_scripted_to_call("mistral_v7", call)
    tokenizer = session.tokenizer
    answer = session.ask("Weather?")
    assert "[TOOL_CALLS]" not in answer  # what is shown has no control tokens
    assert session.messages[-1] == {"role": "assistant", "content": "", "tool_calls": [call]}
    result = {"role": "tool", "tool_call_id": "xyz123456", "content": "sunny"}
    next_prompt = tokenizer.decode(session.prompt_ids(session.messages + [result])["input_ids"][0])
    assert "[TOOL_CALLS]f[CALL_ID]xyz123456[ARGS]{}</s>[TOOL_RESULTS]xyz123456" in next_prompt


@pytest.mark.slow
def test_chat_reads_a_glm4_call_back_and_stops_at_the_turn_token_after_it():
    """GLM-4 writes a call where a plain reply's line break goes ('<|assistant|>f\\n{}') and
    ends it with a role token: `xft chat` stops there, reads the call back, and the history
    renders it as training did, the result as an '<|observation|>' turn."""
    call = {"type": "function", "function": {"name": "f", "arguments": {}}}
    session = _session_scripted_to_call("glm4", call)
    tokenizer = session.tokenizer
    session.ask("Weather?")
    assert not session.hit_limit
    assert session.messages[-1] == {"role": "assistant", "content": "", "tool_calls": [call]}
    result = {"role": "tool", "content": "sunny"}
    next_prompt = tokenizer.decode(session.prompt_ids(session.messages + [result])["input_ids"][0])
    assert next_prompt.endswith("<|assistant|>f\n{}<|observation|>\nsunny<|assistant|>")
