"""Templates against the families' real tokenizers in ../shared/data/tokenizers (skipped without).

Token ids must equal tokenizer.apply_chat_template(messages, tokenize=True) with the model's own
chat template: Mistral v0.3's from its tokenizer_config.json; Qwen2-Instruct's ChatML (the
shared qwen2 tokenizer_config carries an altered template, so the real one is passed in);
InternLM2-chat's, on its sentencepiece model with the chat tokens named as upstream names them.
"""

import pytest
from test_templates import CONVERSATIONS, TOOL_CHAT, TOOL_DEFS_CHATS, hf_form, reference

from xft.data.encode import IGNORE_INDEX, encode_conversations
from xft.data.templates import get_template
from xft.errors import ConfigError, RecordError

# What the upstream internlm2-chat tokenizer_config calls the last six sentencepiece pieces.
INTERNLM2_CHAT_TOKENS = {92538: "<|plugin|>", 92539: "<|interpreter|>", 92540: "<|action_end|>",
                         92541: "<|action_start|>", 92542: "<|im_end|>", 92543: "<|im_start|>"}


def apply(tokenizer, messages, chat_template=None, tokenize=True, add_generation_prompt=False):
    """apply_chat_template on xft's conversation form (tool definitions as `tools=`)."""
    messages, tools = hf_form(messages)
    out = tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=tokenize,
                                        add_generation_prompt=add_generation_prompt, tools=tools)
    return list(out["input_ids"]) if tokenize else out


def assert_matches(template, tokenizer, messages, chat_template=None):
    samples, _ = encode_conversations([messages], template, tokenizer, 8192)
    assert samples[0]["input_ids"] == apply(tokenizer, messages, chat_template)
    prompt = messages[:-1]
    assert template.render(prompt, add_generation_prompt=True).text == apply(
        tokenizer, prompt, chat_template, tokenize=False, add_generation_prompt=True)
    return samples[0]


def trained_runs(tokenizer, sample):
    """The decoded stretches of trained tokens."""
    runs, run = [], []
    for token, label in zip(sample["input_ids"], sample["labels"]):
        if label != IGNORE_INDEX:
            run.append(token)
        elif run:
            runs.append(tokenizer.decode(run))
            run = []
    return runs + ([tokenizer.decode(run)] if run else [])


def trained_text(tokenizer, sample):
    return tokenizer.decode([t for t, label in zip(sample["input_ids"], sample["labels"])
                             if label != IGNORE_INDEX])


@pytest.fixture(scope="module")
def mistral(shared_data):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared_data / "tokenizers" / "mistral-7b-instruct-v0.3")


@pytest.mark.parametrize("key", CONVERSATIONS)
def test_mistral_v3_tokens_equal_its_own_template(mistral, key):
    template = get_template("mistral_v3", mistral)
    sample = assert_matches(template, mistral, CONVERSATIONS[key])
    # Its own template drops the system prompt when a reply ends the conversation; xft too.
    if CONVERSATIONS[key][0]["role"] == "system":
        assert "Tuna, a terse" not in mistral.decode(sample["input_ids"])
    # Replies and </s> are trained; the EOS id is the label even though pad may alias it.
    assert sample["labels"][-1] == mistral.eos_token_id
    replies = [m["content"].strip() for m in CONVERSATIONS[key] if m["role"] == "assistant"]
    pieces = trained_text(mistral, sample).split("</s>")
    assert [p.strip() for p in pieces[:-1]] == replies and pieces[-1] == ""


def test_mistral_v3_tool_calls_equal_its_own_template(mistral):
    template = get_template("mistral_v3", mistral)
    sample = assert_matches(template, mistral, TOOL_CHAT)
    trained = trained_text(mistral, sample)
    assert '[TOOL_CALLS] [{"name": "get_weather"' in trained and "temp" not in trained


@pytest.mark.parametrize("key", TOOL_DEFS_CHATS)
def test_mistral_v3_tool_definitions_equal_its_own_template(mistral, key):
    messages = TOOL_DEFS_CHATS[key]
    sample = assert_matches(get_template("mistral_v3", mistral), mistral, messages)
    text = mistral.decode(sample["input_ids"])
    assert text.count("[AVAILABLE_TOOLS]") == 1 and "None" not in text
    # Only the replies and calls are trained: not the definitions, not the tool results.
    replies = [m for m in messages if m["role"] == "assistant"]
    runs = trained_runs(mistral, sample)
    assert len(runs) == len(replies)
    for run, reply in zip(runs, replies):
        assert run.endswith("</s>") and "AVAILABLE_TOOLS" not in run and "temp" not in run
        assert run.startswith("[TOOL_CALLS]") == bool(reply.get("tool_calls"))


def test_mistral_v3_refuses_roles_that_do_not_alternate(mistral):
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"}]
    with pytest.raises(Exception, match="alternate"):
        apply(mistral, messages)
    with pytest.raises(RecordError, match="alternate"):
        get_template("mistral_v3", mistral).render(messages)


def test_auto_on_mistral_v3(mistral):
    auto = get_template("auto", mistral)
    named = get_template("mistral_v3", mistral)
    messages = CONVERSATIONS["multi"]
    got, _ = encode_conversations([messages], auto, mistral, 8192)
    want, _ = encode_conversations([messages], named, mistral, 8192)
    assert got == want
    # With a system prompt its text moves between turns (no growing prefix): auto finds
    # the replies by marker substitution, and trains what the named template trains.
    for key in ("multi_system", "single_system"):
        got, _ = encode_conversations([CONVERSATIONS[key]], auto, mistral, 8192)
        want, _ = encode_conversations([CONVERSATIONS[key]], named, mistral, 8192)
        assert got == want
    # A chat prompt needs no spans, so chat still works with it.
    prompt = CONVERSATIONS["multi_system"][:-1]
    assert auto.render(prompt, add_generation_prompt=True).text == apply(
        mistral, prompt, tokenize=False, add_generation_prompt=True)


@pytest.fixture(scope="module")
def qwen2(shared_data):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(shared_data / "tokenizers" / "qwen2")
    assert tokenizer.chat_template.rstrip().endswith("template ends here")  # the altered fixture
    return tokenizer


@pytest.mark.parametrize("key", CONVERSATIONS)
def test_qwen2_tokens_equal_qwen2_instruct_template(qwen2, key):
    sample = assert_matches(get_template("qwen2_chat", qwen2), qwen2, CONVERSATIONS[key],
                            reference("qwen2_chat"))
    end = qwen2.convert_tokens_to_ids("<|im_end|>")
    assert sample["labels"][-2] == end and sample["labels"][-1] == IGNORE_INDEX


def test_qwen2_tool_calls_equal_qwen25_template(qwen2):
    assert_matches(get_template("qwen2_chat", qwen2), qwen2, TOOL_CHAT,
                   reference("qwen2_chat_tools"))


@pytest.mark.parametrize("key", TOOL_DEFS_CHATS)
def test_qwen2_tool_definitions_equal_qwen25_template(qwen2, key):
    messages = TOOL_DEFS_CHATS[key]
    sample = assert_matches(get_template("qwen2_chat", qwen2), qwen2, messages,
                            reference("qwen2_chat_tools"))
    runs = trained_runs(qwen2, sample)
    assert not any("# Tools" in run or "get_time" in run or "temp" in run for run in runs)
    assert runs[-1] == messages[-1]["content"] + "<|im_end|>"


@pytest.fixture(scope="module")
def internlm2_chat(shared_data, tmp_path_factory):
    """The InternLM2 sentencepiece model with its last six pieces renamed as upstream does."""
    from sentencepiece import sentencepiece_model_pb2
    from transformers import AutoTokenizer

    model = sentencepiece_model_pb2.ModelProto()
    source = shared_data / "tokenizers" / "internlm2" / "tokenizer.model"
    model.ParseFromString(source.read_bytes())
    for index, name in INTERNLM2_CHAT_TOKENS.items():
        model.pieces[index].piece = name
        model.pieces[index].type = sentencepiece_model_pb2.ModelProto.SentencePiece.USER_DEFINED
    out = tmp_path_factory.mktemp("internlm2_chat")
    (out / "tokenizer.model").write_bytes(model.SerializeToString())
    return AutoTokenizer.from_pretrained(out)


@pytest.mark.parametrize("key", CONVERSATIONS)
@pytest.mark.slow
def test_internlm2_tokens_equal_internlm2_chat_template(internlm2_chat, key):
    assert internlm2_chat.convert_tokens_to_ids("<|im_start|>") == 92543
    sample = assert_matches(get_template("internlm2_chat", internlm2_chat), internlm2_chat,
                            CONVERSATIONS[key], reference("internlm2_chat"))
    assert sample["input_ids"][:2] == [internlm2_chat.bos_token_id, 92543]
    assert sample["labels"][-2] == 92542  # <|im_end|> ends the reply and is trained


@pytest.mark.slow
def test_internlm2_model_file_alone_is_refused(shared_data):
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(shared_data / "tokenizers" / "internlm2")
    with pytest.raises(ConfigError, match="<|im_end|>"):
        get_template("internlm2_chat", plain)


def test_mistral_v3_tool_definitions_only_before_the_last_user_message(mistral):
    # The one difference from Mistral's template: it finds "the last user message" by
    # comparing contents, so an earlier message with the same text gets the definitions too.
    tools = TOOL_DEFS_CHATS["tool_defs"][0]["tools"]
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}] * 2
    text = get_template("mistral_v3", mistral).render(
        [{"role": "system", "content": None, "tools": tools}] + turns).text
    official = mistral.apply_chat_template(turns, tools=tools, tokenize=False)
    assert official.count("[AVAILABLE_TOOLS]") == 2 and text.count("[AVAILABLE_TOOLS]") == 1
    first_block = official[len("<s>"):official.index("[INST]")]
    assert text == official.replace(first_block, "", 1)
