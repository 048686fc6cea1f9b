"""`auto` on the official templates of thinking models, which rewrite earlier turns.

Qwen3 drops the <think> block of replies before the last user message and gives the
final reply an (empty) block; DeepSeek-R1 drops thoughts from every reply. Neither
renders a conversation as growing prefixes, so `auto` finds each reply by marker
substitution. Checked here on faithful tokenizers (tests/reasoning_tokenizers.py):
the text and ids are the official apply_chat_template output, and the trained
stretches are exactly each reply as the official template renders it (stated below
from the templates' documented rules, independently of xft) with its end-of-turn token.
"""

import pytest
from reasoning_tokenizers import deepseek_r1_tokenizer, qwen3_tokenizer
from test_templates import CONVERSATIONS, SYSTEM, TOOL_DEFS_CHATS
from test_templates_real import trained_runs

from xft.data.encode import encode_conversations
from xft.data.templates import get_template


def user(text):
    return {"role": "user", "content": text}


def reply(text, reasoning=None, **extra):
    msg = {"role": "assistant", "content": text, **extra}
    if reasoning is not None:
        msg["reasoning_content"] = reasoning
    return msg


CALL = {"id": "call12345", "type": "function",
        "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
CHATS = {
    "thinking_multi": [SYSTEM, user("What is 2+2?"), reply("4.", "2 plus 2 is 4."),
                       user("And 3+3?"), reply("6.", "3 plus 3 is 6.")],
    "inline_think": [user("2+2?"), reply("<think>\nadd them\n</think>\n\n4."),
                     user("3+3?"), reply("<think>\nagain\n</think>\n\n6.")],
    "plain_multi": CONVERSATIONS["multi"],
    "plain_single": CONVERSATIONS["single"],
    "tools_after_query": [user("Weather in Paris?"),
                          reply("", "I should look it up.", tool_calls=[CALL]),
                          {"role": "tool", "tool_call_id": "call12345", "content": '{"temp": 21}'},
                          reply("21 °C.", "The tool says 21.")],
}


def _split(msg):
    """(reasoning, answer) as both templates read a reply."""
    if msg.get("reasoning_content") is not None:
        return msg["reasoning_content"], msg["content"]
    if "</think>" in msg["content"]:
        thought, answer = msg["content"].split("</think>")[0], msg["content"].split("</think>")[-1]
        return thought.rstrip("\n").split("<think>")[-1].lstrip("\n"), answer
    return "", msg["content"]


def qwen3_replies(messages):
    """Each reply as Qwen3's template renders it, with '<|im_end|>'."""
    last_query = max(i for i, m in enumerate(messages) if m["role"] == "user")
    out = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        thought, answer = _split(msg)
        answer = answer.lstrip("\n") if "</think>" in msg["content"] else answer
        if i > last_query and (i == len(messages) - 1 or thought):
            text = "<think>\n" + thought.strip("\n") + "\n</think>\n\n" + answer.lstrip("\n")
        else:
            text = answer
        for j, call in enumerate(msg.get("tool_calls", [])):
            text += ("\n" if answer or j else "") + '<tool_call>\n{"name": "get_weather", ' \
                    '"arguments": {"city": "Paris"}}\n</tool_call>'
        out.append(text + "<|im_end|>")
    return out


def r1_replies(messages):
    """Each reply as DeepSeek-R1's template renders it: thoughts dropped, EOS after."""
    return [_split(m)[1] + "<｜end▁of▁sentence｜>" for m in messages if m["role"] == "assistant"]


@pytest.fixture(scope="module")
def qwen3(shared_data):
    return qwen3_tokenizer(shared_data)


@pytest.fixture(scope="module")
def r1(shared_data):
    return deepseek_r1_tokenizer(shared_data)


def official_ids(tokenizer, messages):
    return list(tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"])


@pytest.mark.parametrize("key", CHATS)
@pytest.mark.slow
def test_auto_trains_each_qwen3_reply_as_the_official_template_renders_it(qwen3, key):
    messages = CHATS[key]
    auto = get_template("auto", qwen3)
    samples, _ = encode_conversations([messages], auto, qwen3, 4096)
    assert samples[0]["input_ids"] == official_ids(qwen3, messages)
    assert trained_runs(qwen3, samples[0]) == qwen3_replies(messages)


@pytest.mark.parametrize("key", sorted(set(CHATS) - {"tools_after_query"}))
@pytest.mark.slow
def test_auto_trains_each_deepseek_r1_reply_as_the_official_template_renders_it(r1, key):
    # R1's template joins tool-call arguments as strings; xft keeps them as objects.
    messages = CHATS[key]
    samples, _ = encode_conversations([messages], get_template("auto", r1), r1, 4096)
    assert samples[0]["input_ids"] == official_ids(r1, messages)
    assert trained_runs(r1, samples[0]) == r1_replies(messages)


def test_auto_on_qwen3_trains_only_the_last_reply_with_train_on_last(qwen3):
    messages = CHATS["thinking_multi"]
    samples, _ = encode_conversations([messages], get_template("auto", qwen3, "last"), qwen3,
                                      4096)
    assert trained_runs(qwen3, samples[0]) == qwen3_replies(messages)[-1:]


# ------------------------------------------------------------------ the named qwen3 template

QWEN3_CHATS = {**CHATS, **{key: TOOL_DEFS_CHATS[key] for key in TOOL_DEFS_CHATS}}


def hf_form(messages):
    from xft.data.templates.auto import hf_chat

    return hf_chat(messages)


@pytest.mark.parametrize("key", QWEN3_CHATS)
def test_qwen3_equals_the_official_template_and_trains_what_auto_trains(qwen3, key):
    messages = QWEN3_CHATS[key]
    named = get_template("qwen3", qwen3)
    chat, tools = hf_form(messages)
    assert named.render(messages).text == qwen3.apply_chat_template(chat, tools=tools,
                                                                    tokenize=False)
    got, _ = encode_conversations([messages], named, qwen3, 4096)
    want, _ = encode_conversations([messages], get_template("auto", qwen3), qwen3, 4096)
    assert got == want
    # The exported jinja renders what the official one renders, prompts in both thinking modes.
    prompt, tools = hf_form(messages[:-1])
    for thinking in (True, False):
        kwargs = dict(tools=tools, tokenize=False, add_generation_prompt=True,
                      enable_thinking=thinking)
        assert qwen3.apply_chat_template(prompt, chat_template=named.to_jinja(), **kwargs) == \
            qwen3.apply_chat_template(prompt, **kwargs)
    assert qwen3.apply_chat_template(chat, tools=tools, tokenize=False,
                                     chat_template=named.to_jinja()) == named.render(messages).text


def test_qwen3_keep_thinking_trains_every_replys_thoughts(qwen3):
    messages = CHATS["thinking_multi"]
    keep = get_template("qwen3_keep_thinking", qwen3)
    samples, _ = encode_conversations([messages], keep, qwen3, 4096)
    assert trained_runs(qwen3, samples[0]) == [
        "<think>\n2 plus 2 is 4.\n</think>\n\n4.<|im_end|>",
        "<think>\n3 plus 3 is 6.\n</think>\n\n6.<|im_end|>"]
    assert qwen3.apply_chat_template(messages, tokenize=False, chat_template=keep.to_jinja()) \
        == keep.render(messages).text


# ------------------------------------------------------------- the named deepseek_r1 template

@pytest.mark.parametrize("key", ["thinking_multi", "plain_multi", "plain_single"])
def test_deepseek_r1_is_official_but_keeps_the_final_replys_thoughts(r1, key):
    messages = CHATS[key]
    named = get_template("deepseek_r1", r1)
    official = r1.apply_chat_template(messages, tokenize=False)
    text = named.render(messages).text
    cut = official.rindex("<｜Assistant｜>")
    assert text[:cut] == official[:cut]  # earlier turns: exactly the official rendering
    thoughts, answer = _split(messages[-1])
    assert text[cut:] == ("<｜Assistant｜><think>\n" + thoughts + "\n</think>\n\n" + answer
                          + "<｜end▁of▁sentence｜>")
    prompt = named.render(messages[:-1], add_generation_prompt=True).text
    assert prompt == r1.apply_chat_template(messages[:-1], tokenize=False,
                                            add_generation_prompt=True)
    samples, _ = encode_conversations([messages], named, r1, 4096)
    runs = trained_runs(r1, samples[0])
    assert runs[:-1] == r1_replies(messages)[:-1]
    if thoughts:  # all the model writes after the prompt
        assert runs[-1] == text[len(prompt):]
    else:  # the prompt's '<think>\n' and '\n</think>' merge into one trained '\n\n' token
        assert runs[-1] == "\n" + text[len(prompt):]
