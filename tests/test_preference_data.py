"""Preference data: formats → PreferencePair / LabeledReply, and exact pair encoding.

The encoding reference is each family's own chat template (`apply_chat_template` on
prompt + [reply]): the real Qwen2 and Mistral v0.3 tokenizers in ../shared/data, and every
registered family's reference jinja on the tiny tokenizer with that family's special tokens.
"""

import json

import pytest
from test_templates import (APPENDS_CLOSING, FAMILY_TOKENS, FINAL_THINK, NO_FIXTURE,
                            OFFICIAL_DEFAULT_SYSTEM, closing_text, family_tokenizer,
                            reference, with_final_think)
from test_templates_real import internlm2_chat  # noqa: F401  (a fixture)

from xft.data.encode import IGNORE_INDEX
from xft.data.encode_pairs import encode_labeled, encode_pairs
from xft.data.formats.preference import to_labeled, to_pair
from xft.data.preference import LabeledReply, PreferencePair
from xft.data.templates import get_template
from xft.errors import ConfigError, RecordError

SYSTEM = {"role": "system", "content": "You are Tuna, a terse assistant."}


def user(text):
    return {"role": "user", "content": text, "loss": None}


def assistant(text):
    return {"role": "assistant", "content": text, "loss": None}


PROMPTS = {
    "single": [user("Who are you?")],
    "system": [SYSTEM, user("Name a fish.")],
    "multi_system": [SYSTEM, user("你是谁?"), assistant("我是Tuna。"), user("And  who made you?\n")],
    "multi": [user(" hi "), assistant("Hello!\nHow can I help?"), user("Count to 3.")],
}
REPLIES = ("I am Tuna, made by xft.", " No idea, sorry!\n")


# ---------------------------------------------------------------------------- formats


def test_llamafactory_sharegpt_pairs_demo_file(shared_data):
    records = json.loads((shared_data / "datasets/preference/dpo_en_demo.json").read_text())
    pairs = [to_pair("sharegpt_pairs", r) for r in records]
    assert len(pairs) == 300
    for record, pair in zip(records, pairs):
        assert pair.chosen == assistant(record["chosen"]["value"])
        assert pair.rejected == assistant(record["rejected"]["value"])
        turns = record["conversations"]
        assert [m["content"] for m in pair.prompt] == [t["value"] for t in turns]
        assert pair.prompt[-1]["role"] == "user"
    assert sum(p.prompt[0]["role"] == "system" for p in pairs) == 80
    assert max(len(p.prompt) for p in pairs) == 13  # multi-turn prompts


def test_trl_explicit_prompt_strings_and_messages():
    strings = to_pair("trl_pairs", {"prompt": "Sky colour?", "chosen": "Blue.",
                                    "rejected": "Green."})
    assert strings == PreferencePair([user("Sky colour?")], assistant("Blue."), assistant("Green."))
    messages = to_pair("trl_pairs", {
        "prompt": [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "Sky colour?"}],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Green."}]})
    assert messages.prompt[0]["content"] == "Be brief." and messages.chosen["content"] == "Blue."


def test_trl_implicit_prompt_is_the_common_leading_messages():
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "Sky colour?"}]
    pair = to_pair("trl_pairs", {"chosen": turns + [{"role": "assistant", "content": "Blue."}],
                                 "rejected": turns + [{"role": "assistant", "content": "Red."}]})
    assert [m["content"] for m in pair.prompt] == ["Hi", "Hello", "Sky colour?"]
    assert (pair.chosen["content"], pair.rejected["content"]) == ("Blue.", "Red.")


def test_alpaca_pairs():
    pair = to_pair("alpaca_pairs", {"instruction": "Translate", "input": "Hello", "system": "S",
                                    "chosen": "Bonjour", "rejected": "Hola"})
    assert [m["content"] for m in pair.prompt] == ["S", "Translate\nHello"]
    assert (pair.chosen["content"], pair.rejected["content"]) == ("Bonjour", "Hola")


def test_kto_unpaired_messages_and_trl_layout():
    item = to_labeled("kto", {"messages": [{"role": "user", "content": "Q"},
                                           {"role": "assistant", "content": "A"}], "label": False})
    assert item == LabeledReply([user("Q")], assistant("A"), False)
    item = to_labeled("kto", {"prompt": "Q", "completion": "A", "label": True})
    assert item.desirable is True and item.reply["content"] == "A"


@pytest.mark.parametrize("fmt, record, field, reason", [
    ("sharegpt_pairs", {"conversations": [{"from": "human", "value": "Q"}],
                        "chosen": {"from": "gpt", "value": "A"}}, "rejected", "missing"),
    ("sharegpt_pairs", {"conversations": [{"from": "human", "value": "Q"}],
                        "chosen": {"from": "gpt", "value": "A"},
                        "rejected": {"from": "gpt", "value": "A"}}, "rejected", "identical"),
    ("sharegpt_pairs", {"conversations": [{"from": "human", "value": "Q"}],
                        "chosen": {"from": "gpt", "value": "  "},
                        "rejected": {"from": "gpt", "value": "B"}}, "chosen.content", "empty"),
    ("sharegpt_pairs", {"conversations": [{"from": "human", "value": "Q"}],
                        "chosen": {"from": "human", "value": "A"},
                        "rejected": {"from": "gpt", "value": "B"}}, "chosen", "assistant"),
    ("sharegpt_pairs", {"conversations": [{"from": "human", "value": "Q"},
                                          {"from": "gpt", "value": "A"}],
                        "chosen": {"from": "gpt", "value": "B"},
                        "rejected": {"from": "gpt", "value": "C"}}, "prompt", "end with a user"),
    ("trl_pairs", {"prompt": "Q", "chosen": "", "rejected": "B"}, "chosen", "empty"),
    ("trl_pairs", {"chosen": [{"role": "user", "content": "Q1"},
                              {"role": "assistant", "content": "A"}],
                   "rejected": [{"role": "user", "content": "Q2"},
                                {"role": "assistant", "content": "B"}]},
     "rejected", "same conversation"),
    ("trl_pairs", {"chosen": "The sky is blue", "rejected": "The sky is red"}, "chosen",
     "list of messages"),
    ("trl_pairs", {"prompt": "Q", "chosen": [{"role": "assistant", "content": "A"},
                                             {"role": "assistant", "content": "A2"}],
                   "rejected": "B"}, "chosen", "one assistant message"),
    ("trl_pairs", {"prompt": "Q", "chosen": [{"role": "assistant", "contnt": "A"}],
                   "rejected": "B"}, "chosen[0].content", "did you mean"),
    ("alpaca_pairs", {"instruction": "Q", "chosen": "A", "rejected": 3}, "rejected", "string"),
    ("kto", {"prompt": "Q", "completion": "A", "label": "yes"}, "label", "true or false"),
    ("kto", {"prompt": "Q", "completion": "A"}, "label", "missing"),
])
def test_bad_records_name_the_field(fmt, record, field, reason):
    convert = to_labeled if fmt == "kto" else to_pair
    with pytest.raises(RecordError, match=reason) as info:
        convert(fmt, record)
    assert info.value.field == field


def test_unknown_format_suggests():
    with pytest.raises(ConfigError, match="did you mean 'trl_pairs'"):
        to_pair("trl_pair", {})


# --------------------------------------------------------------------------- encoding


def official_ids(tokenizer, messages, chat_template=None, family=None):
    """apply_chat_template's ids, with xft's documented differences from a family's jinja
    (test_templates: ChatGLM3's closing EOS, GLM-4's closing <|user|>, DeepSeek-R1's kept
    final think block)."""
    plain = [{k: v for k, v in m.items() if k != "loss"} for m in messages]
    if family in FINAL_THINK:
        text = tokenizer.apply_chat_template(plain, chat_template=chat_template, tokenize=False)
        return tokenizer(with_final_think(family, text), add_special_tokens=False)["input_ids"]
    out = tokenizer.apply_chat_template(plain, chat_template=chat_template, tokenize=True)
    closing = ([tokenizer.convert_tokens_to_ids(closing_text(family, tokenizer))]
               if family in APPENDS_CLOSING else [])
    return list(out["input_ids"]) + closing


def check_pair_encoding(template, tokenizer, prompt, chat_template=None, replies=REPLIES,
                        family=None):
    """Both sides equal apply_chat_template up to the reply's end; only the reply is trained."""
    pair = PreferencePair(prompt, assistant(replies[0]), assistant(replies[1]))
    samples, stats = encode_pairs([pair], template, tokenizer, 4096)
    (sample,) = samples
    for side, reply in zip(("chosen", "rejected"), replies):
        ids = sample["prompt_ids"] + sample[f"{side}_ids"]
        assert ids == official_ids(tokenizer, prompt + [assistant(reply)], chat_template, family)
        labels = sample[f"{side}_labels"]
        assert len(labels) == len(sample[f"{side}_ids"])
        trained = [t for t, label in zip(sample[f"{side}_ids"], labels) if label != IGNORE_INDEX]
        # The reply starts where the prompt ends, after at most the template's whitespace.
        lead = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
        assert tokenizer.decode(sample[f"{side}_ids"][:lead]).strip() == ""
        text = tokenizer.decode(trained)
        assert reply.strip() in text and not any(
            m["content"] in text for m in prompt if m["content"].strip())
    assert stats.samples == 1 and stats.label_tokens > 0
    return sample


@pytest.fixture(scope="module")
def qwen2(shared_data):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared_data / "tokenizers" / "qwen2")


@pytest.fixture(scope="module")
def mistral(shared_data):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared_data / "tokenizers" / "mistral-7b-instruct-v0.3")


@pytest.mark.parametrize("key", PROMPTS)
def test_qwen2_pairs_equal_qwen2_instruct_template(qwen2, key):
    sample = check_pair_encoding(get_template("qwen2_chat", qwen2), qwen2, PROMPTS[key],
                                 reference("qwen2_chat"))
    end = qwen2.convert_tokens_to_ids("<|im_end|>")
    for side in ("chosen", "rejected"):  # <|im_end|> trained, the "\n" after it not
        assert sample[f"{side}_labels"][-2:] == [end, IGNORE_INDEX]


@pytest.mark.parametrize("key", PROMPTS)
def test_mistral_v3_pairs_equal_its_own_template(mistral, key):
    sample = check_pair_encoding(get_template("mistral_v3", mistral), mistral, PROMPTS[key])
    assert sample["prompt_ids"].count(mistral.bos_token_id) == 1  # no double BOS (axolotl#1616)
    for side in ("chosen", "rejected"):
        assert sample[f"{side}_labels"][-1] == mistral.eos_token_id


@pytest.mark.parametrize("key", PROMPTS)
def test_internlm2_pairs_equal_internlm2_chat_template(internlm2_chat, key):  # noqa: F811
    tokenizer = internlm2_chat
    sample = check_pair_encoding(get_template("internlm2_chat", tokenizer), tokenizer,
                                 PROMPTS[key], reference("internlm2_chat"))
    assert sample["prompt_ids"].count(tokenizer.bos_token_id) == 1  # no double BOS


FAMILIES = sorted(set(FAMILY_TOKENS) - NO_FIXTURE)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_pairs_equal_its_reference_template(family):
    tokenizer = family_tokenizer(family)
    template = get_template(family, tokenizer)
    for prompt in PROMPTS.values():
        if family in OFFICIAL_DEFAULT_SYSTEM and prompt[0]["role"] != "system":
            continue  # the official template adds its dated default system prompt
        try:
            template.render(prompt + [assistant("x")])
        except RecordError:
            continue  # a family without a system role
        sample = check_pair_encoding(template, tokenizer, prompt, reference(family), family=family)
        bos = tokenizer.bos_token_id
        assert bos is None or sample["prompt_ids"][:2] != [bos, bos]  # axolotl#1616


def test_tiny_tokenizer_pairs_equal_its_own_template():
    from transformers import AutoTokenizer

    from xft.paths import resolve_path

    tiny = AutoTokenizer.from_pretrained(resolve_path("xft://tiny-llama"))
    for prompt in PROMPTS.values():
        check_pair_encoding(get_template("chatml", tiny), tiny, prompt)


def test_over_long_pairs_truncate_the_prompt_from_the_left_or_drop(qwen2):
    template = get_template("qwen2_chat", qwen2)
    long_prompt = [SYSTEM, user("word " * 200)]
    pair = PreferencePair(long_prompt, assistant("Short."), assistant("A longer reply here."))
    (full,), _ = encode_pairs([pair], template, qwen2, 4096)
    longest = max(len(full["chosen_ids"]), len(full["rejected_ids"]))
    samples, stats = encode_pairs([pair], template, qwen2, 64, truncation="truncate")
    (cut,) = samples
    assert stats.truncated == 1 and stats.dropped_too_long == 0
    assert len(cut["prompt_ids"]) + longest == 64
    assert cut["prompt_ids"] == full["prompt_ids"][-(64 - longest):]
    for side in ("chosen", "rejected"):  # replies untouched
        assert cut[f"{side}_ids"] == full[f"{side}_ids"]
    samples, stats = encode_pairs([pair], template, qwen2, 64, truncation="drop")
    assert samples == [] and stats.dropped_too_long == 1
    # A reply that alone fills max_length is never cut: the pair is dropped under either policy.
    samples, stats = encode_pairs([pair], template, qwen2, longest, truncation="truncate")
    assert samples == [] and stats.dropped_too_long == 1 and stats.truncated == 0


def test_kto_items_encode_one_side(qwen2):
    template = get_template("qwen2_chat", qwen2)
    item = LabeledReply(PROMPTS["system"], assistant("Tuna."), False)
    (sample,), stats = encode_labeled([item], template, qwen2, 4096)
    assert sample["label"] == [0] and stats.samples == 1
    assert sample["prompt_ids"] + sample["completion_ids"] == official_ids(
        qwen2, PROMPTS["system"] + [assistant("Tuna.")], reference("qwen2_chat"))


def test_replies_that_merge_differently_at_the_boundary_share_the_prompt():
    # deepseek_chat's "Assistant: " + " No": the template's space and the reply's space
    # tokenize differently from "Assistant: " + "I". Each side stays the official ids, and
    # the shared prompt ends where the generation prompt ("Assistant:") ends, so the
    # template's space is the reply's first trained token, as the model generates it.
    tokenizer = family_tokenizer("deepseek_chat")
    template = get_template("deepseek_chat", tokenizer)
    sample = check_pair_encoding(template, tokenizer, PROMPTS["single"],
                                 reference("deepseek_chat"), replies=("I am.", " No."))
    assert sample["prompt_ids"] == tokenizer(
        template.render(PROMPTS["single"], add_generation_prompt=True).text,
        add_special_tokens=False)["input_ids"]
    for side, text in (("chosen", " I am."), ("rejected", "  No.")):
        assert sample[f"{side}_labels"][0] != IGNORE_INDEX
        trained = [t for t in sample[f"{side}_labels"] if t != IGNORE_INDEX]
        assert tokenizer.decode(trained) == text + tokenizer.eos_token


def test_a_reply_with_nothing_before_it_is_dropped_and_counted():
    from xft.data.templates import ChatTemplate

    tokenizer = family_tokenizer("alpaca")
    bare = ChatTemplate(name="bare", user="{content}", assistant_prefix="",
                        assistant_suffix="").bind(tokenizer)
    pairs = [PreferencePair([user("")], assistant("A"), assistant("B")),
             PreferencePair([user("Q")], assistant("A"), assistant("B"))]
    samples, stats = encode_pairs(pairs, bare, tokenizer, 4096)
    assert len(samples) == stats.samples == 1 and stats.dropped_no_label == 1
