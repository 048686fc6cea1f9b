"""The generation prompt is a token prefix of the text the model was trained on.

For every template and every tokenizer it can bind to: tokenize(prompt) equals the
first tokens of tokenize(training text), so inference never starts the reply from
a token the model never saw there (e.g. a lone '▁' where training merged the space
into the next word). Tokenizers: each family's test tokenizer (xft's tiny
byte-level BPE plus the family's special tokens) and the real ones that exist here.
"""

import os

import pytest
from test_templates import CONVERSATIONS, FAMILY_TOKENS, family_tokenizer

from xft.data.templates import TEMPLATES, get_template
from xft.errors import ConfigError, RecordError

REAL = ("qwen2", "mistral-7b-instruct-v0.3", "mistral_v1_legacy", "mistral_v1", "qwen3",
        "deepseek_r1")


def real_tokenizer(name, shared_data, tmp_path_factory):
    from transformers import AutoTokenizer

    if name in ("qwen3", "deepseek_r1"):  # faithful: the Qwen2 BPE + the family's tokens
        import reasoning_tokenizers

        return getattr(reasoning_tokenizers, name + "_tokenizer")(shared_data)
    if name.startswith("mistral_v1"):  # the v0.1/v0.2 sentencepiece model mistral-common ships
        mistral_common = pytest.importorskip("mistral_common")
        folder = tmp_path_factory.mktemp(name)
        source = os.path.join(os.path.dirname(mistral_common.__file__), "data",
                              "tokenizer.model.v1")
        (folder / "tokenizer.model").write_bytes(open(source, "rb").read())
        return AutoTokenizer.from_pretrained(folder, legacy=name.endswith("legacy"))
    return AutoTokenizer.from_pretrained(shared_data / "tokenizers" / name)


def assert_prompt_is_token_prefix(template, tokenizer):
    checked = 0
    for messages in CONVERSATIONS.values():
        if template.think:  # thinking models are tuned on replies with thoughts; with empty
            # ones DeepSeek-R1's prompt '<think>\n' and the reply's '\n</think>' merge into
            # one '\n\n' token (docs/templates.md)
            messages = messages[:-1] + [dict(messages[-1], reasoning_content="Let me see.")]
        try:
            prompt = template.render(messages[:-1], add_generation_prompt=True).text
            full = template.render(messages).text
        except RecordError:  # e.g. a system prompt for a family without one
            continue
        if template.system_placement == "final_user" and messages[0]["role"] == "system":
            continue  # Mistral v0.3's own template drops the system prompt from training text
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        assert full_ids[:len(prompt_ids)] == prompt_ids, (
            f"{template.name}: prompt ends in {tokenizer.convert_ids_to_tokens(prompt_ids[-3:])}"
            f", training text has {tokenizer.convert_ids_to_tokens(full_ids[len(prompt_ids) - 3:len(prompt_ids) + 1])}")
        checked += 1
    assert checked


NAMED = sorted(n for n in TEMPLATES if n != "auto")


@pytest.mark.parametrize("name", NAMED)
def test_prompt_is_a_token_prefix_with_the_family_tokenizer(name):
    family = name if name in FAMILY_TOKENS else "mistral"
    tokenizer = family_tokenizer(family)
    assert_prompt_is_token_prefix(get_template(name, tokenizer), tokenizer)


@pytest.mark.parametrize("real", REAL)
@pytest.mark.slow
def test_prompt_is_a_token_prefix_with_real_tokenizers(real, shared_data, tmp_path_factory):
    tokenizer = real_tokenizer(real, shared_data, tmp_path_factory)
    bound = 0
    for name in NAMED:
        try:
            template = get_template(name, tokenizer)
        except ConfigError:  # the tokenizer lacks the family's turn tokens
            continue
        assert_prompt_is_token_prefix(template, tokenizer)
        bound += 1
    assert bound >= 3


@pytest.mark.parametrize("legacy", [False, True])
def test_mistral_v1_ids_against_mistral_common(legacy, tmp_path_factory):
    """Mistral 7B Instruct v0.1/v0.2 (tokenizer v1): xft's text is the official template's
    ('<s> [INST] ...', also mistral's own cookbook string). Its ids are mistral-common's
    with the tokenizer loaded non-legacy; loaded legacy, the tokenizer itself puts a '▁'
    after <s> and </s>, and the official template's text gives one '▁' too many there."""
    from mistral_common.protocol.instruct.messages import (AssistantMessage, SystemMessage,
                                                           UserMessage)
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    name = "mistral_v1_legacy" if legacy else "mistral_v1"
    tokenizer = real_tokenizer(name, None, tmp_path_factory)
    import mistral_common

    reference = MistralTokenizer.from_file(os.path.join(
        os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1"))
    messages = [{"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Hello, how are you?"},
                {"role": "assistant", "content": "Fine, and you?"},
                {"role": "user", "content": "I'm great!"}]
    want = reference.encode_chat_completion(ChatCompletionRequest(messages=[
        SystemMessage(content="Be terse."), UserMessage(content="Hello, how are you?"),
        AssistantMessage(content="Fine, and you?"), UserMessage(content="I'm great!")])).tokens
    text = get_template("mistral", tokenizer).render(messages, add_generation_prompt=True).text
    from test_templates import reference as fixture

    assert text == tokenizer.apply_chat_template(messages, chat_template=fixture("mistral"),
                                                 tokenize=False, add_generation_prompt=True)
    got = tokenizer(text, add_special_tokens=False)["input_ids"]
    if legacy:
        assert got != want and got[1] == tokenizer.convert_tokens_to_ids("▁")
        assert [t for i, t in enumerate(got) if not (t == got[1] and got[i - 1] in (1, 2))] \
            == want
    else:
        assert got == want
