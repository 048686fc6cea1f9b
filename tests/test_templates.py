"""Every registered template against its family's reference jinja (official chat_template, or the
documented format for base-model templates) in tests/fixtures/chat_templates/.

Each family gets a test tokenizer: xft's tiny byte-level BPE plus the family's special tokens
(BOS, EOS, turn markers). Real tokenizers are tested in test_templates_real.py.
"""

import re
from pathlib import Path

import pytest
from conftest import FAMILY_TOKENS, family_tokenizer
from transformers import PreTrainedTokenizerFast

from xft.data.encode import IGNORE_INDEX, encode_conversations
from xft.data.templates import TEMPLATES, ChatTemplate, get_template, template_spec
from xft.errors import ConfigError, RecordError
from xft.paths import resolve_path

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"

# The one deliberate difference from a reference: xft closes a ChatGLM3 conversation with EOS
# and a GLM-4 one with '<|user|>' (their chat_templates end a reply with nothing; the families'
# own fine-tuning scripts append these). None: the tokenizer's EOS.
APPENDS_CLOSING = {"chatglm3": None, "glm4": "<|user|>"}


def closing_text(name, tokenizer):
    return APPENDS_CLOSING[name] or tokenizer.eos_token
# The other: xft's DeepSeek-R1 keeps the final reply's think block (empty here), which its
# template drops although its generation prompt opens one (see families.py).
FINAL_THINK = {"deepseek_r1": ("<｜Assistant｜>", "<think>\n\n</think>\n\n")}


# Mistral v7's template puts a dated default system prompt (today's date, from strftime_now)
# into conversations without one; xft renders none. The references are compared with that
# turn taken out, so everything else must be equal.
OFFICIAL_DEFAULT_SYSTEM = {"mistral_v7": re.compile(r"\[SYSTEM_PROMPT\].*?\[/SYSTEM_PROMPT\]",
                                                    flags=re.DOTALL)}


def without_official_default(name, messages, text):
    """The reference text without the default system turn xft does not render."""
    if name not in OFFICIAL_DEFAULT_SYSTEM or (messages and messages[0]["role"] == "system"):
        return text
    return OFFICIAL_DEFAULT_SYSTEM[name].sub("", text, count=1)


def with_final_think(name, text):
    """The reference rendering with the think block xft keeps in the final reply."""
    if name not in FINAL_THINK:
        return text
    opening, block = FINAL_THINK[name]
    at = text.rindex(opening) + len(opening)
    return text[:at] + block + text[at:]
# mistral_v3's reference is its real tokenizer_config (test_templates_real.py); auto has none;
# MOSS ships no chat_template: test_templates_moss.py checks moss against the raw MOSS records.
NO_FIXTURE = {"mistral_v3", "auto", "moss", "qwen3_keep_thinking"}

SYSTEM = {"role": "system", "content": "You are Tuna, a terse assistant."}
CONVERSATIONS = {
    "single": [{"role": "user", "content": "Who are you?"},
               {"role": "assistant", "content": "I am Tuna."}],
    "single_system": [SYSTEM, {"role": "user", "content": "Name a fish."},
                      {"role": "assistant", "content": "Tuna."}],
    "multi_system": [SYSTEM,
                     {"role": "user", "content": "你是谁?"},
                     {"role": "assistant", "content": "我是Tuna。"},
                     {"role": "user", "content": "And  who made you?\n"},
                     {"role": "assistant", "content": " The xft team, with spaces "}],
    "multi": [{"role": "user", "content": " hi "},
              {"role": "assistant", "content": "Hello!\nHow can I help?"},
              {"role": "user", "content": "Count to 3."},
              {"role": "assistant", "content": "1, 2, 3."}],
}
TOOL_CHAT = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"id": "call12345", "type": "function",
                     "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"id": "call67890", "type": "function",
                     "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
    {"role": "tool", "tool_call_id": "call12345", "content": '{"temp": 21}'},
    {"role": "tool", "tool_call_id": "call67890", "content": '{"temp": 25}'},
    {"role": "assistant", "content": "Paris 21 °C, Rome 25 °C."},
]
TOOL_TEMPLATES = {"qwen2_chat", "mistral_v3", "mistral_v7", "qwen3", "qwen3_keep_thinking",
                  "llama3_1", "glm4"}
# Llama 3.1's template makes one call per reply: its conversations call one tool at a time.
ONE_CALL_CHAT = [
    TOOL_CHAT[0],
    dict(TOOL_CHAT[1], tool_calls=TOOL_CHAT[1]["tool_calls"][:1]), TOOL_CHAT[2],
    dict(TOOL_CHAT[1], tool_calls=TOOL_CHAT[1]["tool_calls"][1:]), TOOL_CHAT[3],
    TOOL_CHAT[4],
]
ONE_CALL_TEMPLATES = {"llama3_1"}


def tool_chat(name):
    """The tool conversation a template can render."""
    return ONE_CALL_CHAT if name in ONE_CALL_TEMPLATES else TOOL_CHAT
# Tool definitions as the formats put them on the system message. Mistral v0.3's template drops
# a function's "return" and writes string values unescaped (the quotes below stay raw).
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": 'Weather "now" in a city, in °C',
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
        "return": {"type": "number"}}},
    {"type": "function", "function": {"name": "get_time", "description": "Local time",
                                      "parameters": {"type": "object", "properties": {}}}},
]
def tool_defs_chats(name):
    chat = tool_chat(name)
    return {
        # A record with tools but no system prompt: the formats' placeholder system message.
        "tool_defs": [{"role": "system", "content": None, "tools": TOOLS}] + chat,
        "tool_defs_system": [dict(SYSTEM, tools=TOOLS)] + chat,
        "tool_defs_plain": [{"role": "system", "content": None, "tools": TOOLS},
                            *CONVERSATIONS["multi"]],
    }


TOOL_DEFS_CHATS = tool_defs_chats("qwen2_chat")


def hf_form(messages):
    """(messages, tools) for apply_chat_template: tools as its `tools=` argument, and no
    system message where the conversation's stands for the default one (content None)."""
    if messages[0]["role"] != "system" or "tools" not in messages[0]:
        return messages, None
    first, rest = messages[0], messages[1:]
    if first["content"] is None:
        return rest, first["tools"]
    return [{"role": "system", "content": first["content"]}] + rest, first["tools"]


def reference(name):
    return (FIXTURES / f"{name}.jinja").read_text(encoding="utf-8")


def jinja_render(tokenizer, chat_template, messages, add_generation_prompt=False, tokenize=False,
                 tools=None):
    out = tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=tokenize,
                                        add_generation_prompt=add_generation_prompt, tools=tools)
    return list(out["input_ids"]) if tokenize else out


def cases():
    """(messages, add_generation_prompt): each conversation, and the prompt for its last reply."""
    for key, messages in CONVERSATIONS.items():
        yield pytest.param(messages, False, id=key)
        yield pytest.param(messages[:-1], True, id=key + "-prompt")


FAMILIES = sorted(set(FAMILY_TOKENS) - NO_FIXTURE)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("messages, add_generation_prompt", list(cases()))
def test_text_equals_reference_jinja(name, messages, add_generation_prompt):
    tokenizer = family_tokenizer(name)
    template = get_template(name, tokenizer)
    try:
        expected = jinja_render(tokenizer, reference(name), messages, add_generation_prompt)
    except Exception as e:  # the reference refuses (e.g. gemma has no system role)
        assert "not supported" in str(e)
        with pytest.raises(RecordError):
            template.render(messages, add_generation_prompt)
        return
    if name in APPENDS_CLOSING and not add_generation_prompt:
        expected += closing_text(name, tokenizer)
    if not add_generation_prompt:
        expected = with_final_think(name, expected)
    expected = without_official_default(name, messages, expected)
    assert template.render(messages, add_generation_prompt).text == expected


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("key", CONVERSATIONS)
def test_tokens_equal_apply_chat_template(name, key):
    tokenizer = family_tokenizer(name)
    messages = CONVERSATIONS[key]
    if name == "gemma" and messages[0]["role"] == "system":
        pytest.skip("gemma has no system role (checked in the text test)")
    samples, _ = encode_conversations([messages], get_template(name, tokenizer), tokenizer, 4096)
    expected = jinja_render(tokenizer, reference(name), messages, tokenize=True)
    if name in APPENDS_CLOSING:
        expected.append(tokenizer.convert_tokens_to_ids(closing_text(name, tokenizer)))
    if name in FINAL_THINK or name in OFFICIAL_DEFAULT_SYSTEM:
        text = jinja_render(tokenizer, reference(name), messages)
        text = without_official_default(name, messages, with_final_think(name, text))
        expected = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert samples[0]["input_ids"] == expected


def _trained_runs(tokenizer, sample):
    runs, current = [], []
    for token, label in zip(sample["input_ids"], sample["labels"]):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def _expected_reply(template, message):
    content = message["content"]
    if "assistant" in template.strip_roles:
        content = content.strip()
    return content + template._fill(template.assistant_suffix)


def _same_reply(run, expected):
    """A run may start with scaffolding whitespace that shares a token with the reply."""
    return run.endswith(expected) and not run[:len(run) - len(expected)].strip()


@pytest.mark.parametrize("name", [n for n in TEMPLATES if n != "auto"])
def test_labels_are_each_reply_and_its_end_of_turn(name):
    tokenizer = family_tokenizer("mistral" if name == "mistral_v3" else name)
    template = get_template(name, tokenizer)
    messages = CONVERSATIONS["multi" if name == "gemma" else "multi_system"]
    samples, _ = encode_conversations([messages], template, tokenizer, 4096)
    runs = _trained_runs(tokenizer, samples[0])
    replies = [_expected_reply(template, m) for m in messages if m["role"] == "assistant"]
    if template.think:  # a thinking model's final reply opens with its (empty) think block,
        # less what the generation prompt already opened (DeepSeek-R1's '<think>\n')
        opened = template._fill(template._generation_prompt())[
            len(template._fill(template.assistant_prefix)):]
        replies[-1] = ("".join(template.think) + replies[-1])[len(opened):]
    if template.user_opening_ends_reply:  # GLM-4: the next '<|user|>' ends each reply
        replies[:-1] = [r + template.user_opening_ends_reply for r in replies[:-1]]
    if template.closing:  # EOS after the final reply is trained too
        if template.turn_separator:
            replies.append(template._fill(template.closing))
        else:
            replies[-1] += template._fill(template.closing)
    assert len(runs) == len(replies)
    assert all(_same_reply(run, reply) for run, reply in zip(runs, replies)), (runs, replies)
    # Everything else (system, user, scaffolding) is -100.
    untrained = tokenizer.decode([t for t, label in zip(samples[0]["input_ids"],
                                                        samples[0]["labels"]) if label == -100])
    for m in messages:
        if m["role"] != "assistant" and not (name == "mistral_v3" and m["role"] == "system"):
            assert m["content"].strip() in untrained


@pytest.mark.parametrize("name", [n for n in FAMILIES if "{eos_token}" in
                                  TEMPLATES[n].assistant_suffix + TEMPLATES[n].closing])
def test_eos_that_ends_a_turn_is_trained_even_when_pad_equals_eos(name):
    tokenizer = family_tokenizer(name)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    samples, _ = encode_conversations([CONVERSATIONS["single"]], get_template(name, tokenizer),
                                      tokenizer, 4096)
    ids, labels = samples[0]["input_ids"], samples[0]["labels"]
    eos_positions = [i for i, t in enumerate(ids) if t == tokenizer.eos_token_id]
    assert eos_positions and all(labels[i] == tokenizer.eos_token_id for i in eos_positions
                                 if i > 0 and labels[i - 1] != IGNORE_INDEX)
    assert labels[eos_positions[-1]] == tokenizer.eos_token_id


# ------------------------------------------------------------------ to_jinja == render


def _to_jinja_cases():
    for name in sorted(TEMPLATES):
        if name == "auto":
            continue
        for key, messages in CONVERSATIONS.items():
            yield pytest.param(name, messages, id=f"{name}-{key}")
        if name in TOOL_TEMPLATES:
            yield pytest.param(name, tool_chat(name), id=f"{name}-tools")
            for key, messages in tool_defs_chats(name).items():
                yield pytest.param(name, messages, id=f"{name}-{key}")


@pytest.mark.parametrize("name, messages", list(_to_jinja_cases()))
def test_to_jinja_renders_what_render_renders(name, messages):
    tokenizer = family_tokenizer("mistral" if name == "mistral_v3" else name)
    template = get_template(name, tokenizer)
    jinja = template.to_jinja()
    for msgs, gen in [(messages, False), (messages[:-1], True)]:
        try:
            expected = template.render(msgs, gen).text
        except RecordError:
            with pytest.raises(Exception, match="system role"):
                jinja_render(tokenizer, jinja, msgs, gen)
            continue
        assert jinja_render(tokenizer, jinja, msgs, gen) == expected
        # Exported, the template also takes tool definitions as apply_chat_template's `tools=`.
        hf_msgs, tools = hf_form(msgs)
        if tools:
            assert jinja_render(tokenizer, jinja, hf_msgs, gen, tools=tools) == expected


def test_to_jinja_raises_where_render_refuses_alternation():
    tokenizer = family_tokenizer("llama2_chat")
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"}]
    for name in ("llama2_chat", "mistral", "gemma"):
        template = get_template(name, family_tokenizer(name))
        with pytest.raises(RecordError, match="alternate"):
            template.render(messages)
        with pytest.raises(Exception, match="alternate"):
            jinja_render(tokenizer, template.to_jinja(), messages)


# --------------------------------------------------------------------------- tools


def test_qwen2_tool_calls_and_results_match_qwen25_reference():
    tokenizer = family_tokenizer("qwen2_chat")
    template = get_template("qwen2_chat", tokenizer)
    ref = reference("qwen2_chat_tools")
    for msgs, gen in [(TOOL_CHAT, False), (TOOL_CHAT[:-1], True), (TOOL_CHAT[:2], False)]:
        assert template.render(msgs, gen).text == jinja_render(tokenizer, ref, msgs, gen)
    # Tool definitions: after the system prompt, or the default one, in the system turn.
    for messages in TOOL_DEFS_CHATS.values():
        for msgs, gen in [(messages, False), (messages[:-1], True)]:
            text = template.render(msgs, gen).text
            hf_msgs, tools = hf_form(msgs)
            assert text == jinja_render(tokenizer, ref, hf_msgs, gen, tools=tools)
            assert "# Tools" in text and '"name": "get_time"' in text and "None" not in text
    # A call that follows some content keeps the content.
    with_text = [TOOL_CHAT[0], dict(TOOL_CHAT[1], content="Let me check.")]
    assert template.render(with_text).text == jinja_render(tokenizer, ref, with_text)
    # Without tools the Qwen2.5 form equals Qwen2's (so one template serves both).
    for messages in CONVERSATIONS.values():
        assert jinja_render(tokenizer, ref, messages) == template.render(messages).text


def test_tool_results_are_never_trained_and_calls_are():
    tokenizer = family_tokenizer("qwen2_chat")
    template = get_template("qwen2_chat", tokenizer)
    samples, _ = encode_conversations([TOOL_CHAT], template, tokenizer, 4096)
    runs = _trained_runs(tokenizer, samples[0])
    assert len(runs) == 2
    assert runs[0].startswith("<tool_call>\n") and runs[0].endswith("</tool_call><|im_end|>")
    assert '"arguments": {"city": "Rome"}' in runs[0]
    assert runs[1] == TOOL_CHAT[-1]["content"] + "<|im_end|>"
    assert not any("temp" in run for run in runs)


@pytest.mark.parametrize("name", sorted(TOOL_TEMPLATES))
@pytest.mark.parametrize("key", ["tool_defs", "tool_defs_system"])
def test_tool_definitions_are_rendered_but_never_trained(name, key):
    tokenizer = family_tokenizer("mistral" if name == "mistral_v3" else name)
    template = get_template(name, tokenizer)
    with_defs = tool_defs_chats(name)[key]
    without = ([] if with_defs[0]["content"] is None else [SYSTEM]) + tool_chat(name)
    samples, _ = encode_conversations([with_defs, without], template, tokenizer, 4096)
    # Same trained text as the conversation without definitions, and the definitions are
    # in the untrained prompt.
    assert _trained_runs(tokenizer, samples[0]) == _trained_runs(tokenizer, samples[1])
    untrained = tokenizer.decode([t for t, label in zip(samples[0]["input_ids"],
                                                        samples[0]["labels"]) if label == -100])
    assert "Local time" in untrained and "get_weather" in untrained
    assert len(samples[0]["input_ids"]) > len(samples[1]["input_ids"])


@pytest.mark.parametrize("name", [n for n in sorted(TEMPLATES) if n != "auto"])
def test_a_system_message_without_content_is_the_default_system_prompt(name):
    # The formats' placeholder for "no system prompt in the record": the template's default
    # (or no system turn), as if the message were absent; never the text "None".
    tokenizer = family_tokenizer("mistral" if name == "mistral_v3" else name)
    template = get_template(name, tokenizer)
    jinja = template.to_jinja()
    for messages in (CONVERSATIONS["single"], CONVERSATIONS["multi"]):
        placeholder = [{"role": "system", "content": None}] + messages
        for msgs, gen in [(placeholder, False), (placeholder[:-1], True)]:
            text = template.render(msgs, gen).text
            assert text == template.render(msgs[1:], gen).text and "None" not in text
            assert jinja_render(tokenizer, jinja, msgs, gen) == text


def test_tool_definitions_must_be_function_specs():
    template = get_template("qwen2_chat", family_tokenizer("qwen2_chat"))
    bad = [{"role": "system", "content": None, "tools": [{"name": "f"}]}] + TOOL_CHAT
    with pytest.raises(RecordError, match=r"messages\[0\]\.tools\[0\]"):
        template.render(bad)


@pytest.mark.parametrize("name", sorted(set(TEMPLATES) - TOOL_TEMPLATES - {"auto", "moss"}))
def test_templates_without_a_tool_format_refuse_tool_messages(name):
    template = get_template(name, family_tokenizer("mistral" if name == "mistral_v3" else name))
    with pytest.raises(RecordError, match="tool"):
        template.render(TOOL_CHAT)


def test_mistral_v3_tool_ids_must_have_nine_characters():
    template = get_template("mistral_v3", family_tokenizer("mistral"))
    bad = [TOOL_CHAT[0], {"role": "assistant", "content": "", "tool_calls": [
        {"id": "x", "function": {"name": "f", "arguments": {}}}]}]
    with pytest.raises(RecordError, match="9-character"):
        template.render(bad)


# ------------------------------------------------------------------------- options


def test_train_on_last_trains_only_the_final_reply():
    tokenizer = family_tokenizer("qwen2_chat")
    messages = CONVERSATIONS["multi_system"]
    template = get_template("qwen2_chat", tokenizer, train_on="last")
    samples, _ = encode_conversations([messages], template, tokenizer, 4096)
    assert _trained_runs(tokenizer, samples[0]) == [messages[-1]["content"] + "<|im_end|>"]
    # A message's own loss flag wins over the policy.
    flagged = [dict(m) for m in messages]
    flagged[2]["loss"] = True
    samples, _ = encode_conversations([flagged], template, tokenizer, 4096)
    assert len(_trained_runs(tokenizer, samples[0])) == 2
    # The text is the same either way; only labels change.
    assert template.render(messages).text == get_template("qwen2_chat", tokenizer).render(
        messages).text


def test_unknown_train_on_and_unknown_template_fail_clearly():
    with pytest.raises(ConfigError, match="train_on"):
        get_template("chatml", family_tokenizer("chatml"), train_on="first")
    with pytest.raises(ConfigError, match="unknown chat template 'qwen9'"):
        template_spec("qwen9")


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_only_a_bound_template_can_render(name):
    """The registry holds specs: rendering needs bind(tokenizer, train_on), so no template
    can render '{bos_token}' as nothing (the check-dataset bug of issue 13)."""
    spec = template_spec(name)
    assert not hasattr(spec, "render")
    with pytest.raises(TypeError):
        spec.bind()  # the tokenizer is not optional


def test_stop_word_that_the_tokenizer_splits_is_refused():
    # The tiny tokenizer knows <|im_end|> but not <|eot_id|>.
    tiny = PreTrainedTokenizerFast(tokenizer_file=str(
        Path(resolve_path("xft://tiny-llama")) / "tokenizer.json"), eos_token="<|im_end|>")
    with pytest.raises(ConfigError, match="<|eot_id|>"):
        get_template("llama3_chat", tiny)
    assert get_template("chatml", tiny).name == "chatml"


def test_registry_is_declarative_and_described():
    for name, template in TEMPLATES.items():
        assert template.name == name and template.description
        if name != "auto":
            assert isinstance(template, ChatTemplate)


# ---------------------------------------------------------------------------- auto

# phi3 writes "<|end|>\n<EOS>" after the last reply: auto trains it as one stretch, the named
# template trains <|end|> and <EOS> but not the line break between them.
AUTO_TRAINS_MORE = {"phi3"}


@pytest.mark.parametrize("name", sorted(set(FAMILIES) - set(APPENDS_CLOSING) - set(FINAL_THINK)))
def test_auto_labels_equal_the_named_template_labels(name):
    tokenizer = family_tokenizer(name)
    with_reference = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer,
                                             bos_token=tokenizer.bos_token,
                                             eos_token=tokenizer.eos_token,
                                             additional_special_tokens=FAMILY_TOKENS[name][2])
    with_reference.chat_template = reference(name)
    auto = get_template("auto", with_reference)
    named = get_template(name, tokenizer)
    for key, messages in CONVERSATIONS.items():
        if name == "gemma" and messages[0]["role"] == "system":
            continue
        if name in OFFICIAL_DEFAULT_SYSTEM and messages[0]["role"] != "system":
            continue  # the official template adds its dated default system prompt
        got, _ = encode_conversations([messages], auto, with_reference, 4096)
        want, _ = encode_conversations([messages], named, tokenizer, 4096)
        assert got[0]["input_ids"] == want[0]["input_ids"]
        if name in AUTO_TRAINS_MORE:
            assert all(g == w for g, w in zip(got[0]["labels"], want[0]["labels"]) if w != -100)
            extra = [t for g, w, t in zip(got[0]["labels"], want[0]["labels"],
                                          got[0]["input_ids"]) if g != w]
            assert tokenizer.decode(extra) == "\n"
        else:
            assert got[0]["labels"] == want[0]["labels"], key


def test_auto_with_tool_definitions_equals_the_named_template():
    # auto passes the system message's tools as `tools=` and leaves a content-None system
    # message out, so the tokenizer's template applies its own default system prompt.
    tokenizer = family_tokenizer("qwen2_chat")
    with_reference = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer,
                                             eos_token=tokenizer.eos_token,
                                             additional_special_tokens=["<|im_start|>",
                                                                        "<|im_end|>"])
    with_reference.chat_template = reference("qwen2_chat_tools")
    auto = get_template("auto", with_reference)
    named = get_template("qwen2_chat", tokenizer)
    for messages in TOOL_DEFS_CHATS.values():
        got, _ = encode_conversations([messages], auto, with_reference, 4096)
        want, _ = encode_conversations([messages], named, tokenizer, 4096)
        assert got == want


def test_auto_train_on_last_and_loss_flags():
    tokenizer = family_tokenizer("chatml")
    with_reference = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer,
                                             eos_token="<|im_end|>")
    with_reference.chat_template = reference("chatml")
    messages = CONVERSATIONS["multi_system"]
    for train_on in ("all", "last"):
        got = get_template("auto", with_reference, train_on).render(messages)
        want = get_template("chatml", tokenizer, train_on).render(messages)
        assert got == want
        auto = get_template("auto", with_reference, train_on)
        assert jinja_render(with_reference, auto.to_jinja(), messages) == got.text


def test_auto_needs_a_tokenizer_with_a_chat_template():
    bare = PreTrainedTokenizerFast(tokenizer_object=family_tokenizer("chatml").backend_tokenizer)
    with pytest.raises(ConfigError, match="chat_template"):
        get_template("auto", bare)


def test_train_on_is_a_validated_data_option():
    from xft.config.schema import validate

    base = dict(model=dict(path="xft://tiny-llama"), template="chatml",
                datasets=[dict(path="x.json")])
    assert validate(base).data.train_on == "all"
    assert validate(dict(base, data=dict(train_on="last"))).data.train_on == "last"
    with pytest.raises(ConfigError, match="did you mean 'last'"):
        validate(dict(base, data=dict(train_on="lst")))


def test_malformed_tool_calls_name_the_field():
    template = get_template("qwen2_chat", family_tokenizer("qwen2_chat"))
    bad = [TOOL_CHAT[0], {"role": "assistant", "content": "", "tool_calls": [{"name": "f"}]}]
    with pytest.raises(RecordError, match=r"messages\[1\]\.tool_calls\[0\]"):
        template.render(bad)


def test_a_misspelled_option_fails_when_the_template_is_declared():
    with pytest.raises(ValueError, match="system_placement"):
        ChatTemplate(name="x", user="{content}", assistant_prefix="", assistant_suffix="",
                     system_placement="first")


@pytest.mark.parametrize("name", ["default", "alpaca"])
def test_base_model_templates_work_with_a_tokenizer_without_bos(name):
    tokenizer = family_tokenizer("qwen2_chat")  # no BOS, EOS <|endoftext|>
    assert tokenizer.bos_token is None
    template = get_template(name, tokenizer)
    messages = CONVERSATIONS["multi_system"]
    text = template.render(messages).text
    assert text == jinja_render(tokenizer, reference(name), messages)
    assert text == jinja_render(tokenizer, template.to_jinja(), messages)
    assert text.count("<|endoftext|>") == 2


@pytest.mark.parametrize("name", ["qwen2_chat", "qwen3"])
def test_parse_reply_takes_back_the_thoughts_and_calls_a_template_renders(name):
    template = get_template(name, family_tokenizer(name))
    call_turn = TOOL_CHAT[1]
    for msg in (call_turn, dict(call_turn, content="Let me check."),
                {"role": "assistant", "content": "Plain answer."}):
        if template.think:
            msg = dict(msg, reasoning_content="I need the weather.")
        rendered = template.render([TOOL_CHAT[0], msg])
        start, end = rendered.loss_spans[-1]
        generated = rendered.text[start:end].removesuffix("<|im_end|>")
        parsed = template.parse_reply(generated)
        calls = [{"type": "function", "function": c["function"]}
                 for c in msg.get("tool_calls", [])]
        assert parsed.get("tool_calls", []) == calls
        assert parsed["content"] == msg["content"]
        assert parsed.get("reasoning_content") == msg.get("reasoning_content")
    # Text that only looks like a call stays text.
    assert "tool_calls" not in template.parse_reply("<tool_call>\nnot json\n</tool_call>")


@pytest.mark.parametrize("key", ["single", "multi"])
def test_gemma_is_gemma_2s_official_template_too(key):
    # Gemma 2's chat_template (google/gemma-2-2b-it) is Gemma's; `gemma` serves both.
    tokenizer = family_tokenizer("gemma")
    template = get_template("gemma", tokenizer)
    messages = CONVERSATIONS[key]
    for msgs, gen in [(messages, False), (messages[:-1], True)]:
        assert template.render(msgs, gen).text == jinja_render(tokenizer, reference("gemma2"),
                                                               msgs, gen)
    samples, _ = encode_conversations([messages], template, tokenizer, 4096)
    assert samples[0]["input_ids"] == jinja_render(tokenizer, reference("gemma2"), messages,
                                                   tokenize=True)


@pytest.mark.parametrize("key", sorted(CONVERSATIONS))
def test_phi4_is_phi_4s_first_released_template_too(key):
    # Phi-4's first chat_template (phi4_original.jinja) wrote the assistant header after every
    # user turn, with or without add_generation_prompt; the fixed one (phi4.jinja) writes it
    # with the reply. For alternating conversations and generation prompts they agree.
    tokenizer = family_tokenizer("phi4")
    template = get_template("phi4", tokenizer)
    messages = CONVERSATIONS[key]
    original = reference("phi4_original")
    for msgs, gen in [(messages, False), (messages[:-1], True)]:
        assert template.render(msgs, gen).text == jinja_render(tokenizer, original, msgs, gen)
    samples, _ = encode_conversations([messages], template, tokenizer, 4096)
    assert samples[0]["input_ids"] == jinja_render(tokenizer, original, messages, tokenize=True)
    # Where they differ: a conversation that ends with a user turn, without a prompt.
    assert jinja_render(tokenizer, original, messages[:-1]) != template.render(messages[:-1]).text
    assert template.render(messages[:-1]).text == jinja_render(tokenizer, reference("phi4"),
                                                               messages[:-1])


def test_gemma3_trims_the_first_user_text_but_not_the_system_prompt():
    # Gemma 3 prepends the system prompt untrimmed to the *trimmed* first user message;
    # Llama 2 trims the merged text. Both against their official templates.
    system = {"role": "system", "content": " Be terse. "}
    messages = [system, {"role": "user", "content": "  hi  "},
                {"role": "assistant", "content": "Hi."}]
    for name in ("gemma3", "llama2_chat"):
        tokenizer = family_tokenizer(name)
        template = get_template(name, tokenizer)
        for msgs, gen in [(messages, False), (messages[:-1], True)]:
            text = template.render(msgs, gen).text
            assert text == jinja_render(tokenizer, reference(name), msgs, gen)
            assert text == jinja_render(tokenizer, template.to_jinja(), msgs, gen)
    text = get_template("gemma3", family_tokenizer("gemma3")).render(messages).text
    assert "<start_of_turn>user\n Be terse. \n\nhi<end_of_turn>" in text


@pytest.mark.parametrize("key", sorted(CONVERSATIONS))
def test_glm4_ids_and_labels_equal_glm4s_own_finetuning_script(key):
    # THUDM/GLM-4 finetune_demo/finetune.py: [gMASK]<sop>, then each message rendered alone by
    # the chat template (without its [gMASK]<sop>), its tokens masked by role (assistant:
    # trained); '<|user|>' appended; the masks shifted right by one, so each reply's trained
    # stretch starts after '<|assistant|>' and takes the token that follows it.
    tokenizer = family_tokenizer("glm4")
    messages = CONVERSATIONS[key]
    samples, _ = encode_conversations([messages], get_template("glm4", tokenizer), tokenizer,
                                      4096)
    ids, labels = glm4_finetune_sample(tokenizer, messages)
    assert samples[0]["input_ids"] == ids
    assert samples[0]["labels"] == labels


def glm4_finetune_sample(tokenizer, glm_messages):
    """(input_ids, labels) as GLM-4's finetune.py builds them from GLM-4's own messages."""
    ids, masks = tokenizer.convert_tokens_to_ids(["[gMASK]", "<sop>"]), [False, False]
    for message in glm_messages:
        new = jinja_render(tokenizer, reference("glm4"), [message], tokenize=True)[2:]
        ids += new
        masks += [message["role"] == "assistant"] * len(new)
    ids.append(tokenizer.convert_tokens_to_ids("<|user|>"))
    masks = [False, *masks]
    return ids, [t if m else IGNORE_INDEX for t, m in zip(ids, masks)]


@pytest.mark.parametrize("name", ["glm4", "chatglm3", "deepseek_chat", "default", "phi4"])
def test_a_parsed_reply_renders_back_into_the_same_history(name):
    # What the model generates after the prompt may start with the rest of assistant_prefix
    # (GLM's line break after '<|assistant|>', the space of 'Assistant: '); parse_reply drops
    # it, so the answer put back into the history renders as the training text did.
    tokenizer = family_tokenizer(name)
    template = get_template(name, tokenizer)
    messages = CONVERSATIONS["multi"]
    full = template.render(messages).text
    generated = full[len(template.render(messages[:-1], add_generation_prompt=True).text):]
    content = messages[-1]["content"]
    reply = template.parse_reply(generated[:generated.index(content) + len(content)])
    assert reply == {"role": "assistant", "content": content}
    assert template.render(messages[:-1] + [reply]).text == full
