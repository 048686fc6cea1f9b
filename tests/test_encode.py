"""Rendering and labels on the embedded tiny tokenizer, checked against apply_chat_template."""

import pytest
from transformers import AutoTokenizer

from xft.data.encode import IGNORE_INDEX, encode_conversations
from xft.data.templates import get_template
from xft.paths import resolve_path

CONVERSATIONS = [
    [{"role": "user", "content": "Who are you?"},
     {"role": "assistant", "content": "I am Tuna."}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "你是谁?"},
     {"role": "assistant", "content": "我是Tuna。"},
     {"role": "user", "content": "And  who made you?\n"},
     {"role": "assistant", "content": " The xft team, with spaces "}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_tokens_equal_apply_chat_template(tokenizer, messages):
    template = get_template("chatml", tokenizer)
    samples, _ = encode_conversations([messages], template, tokenizer, max_length=1024)
    reference = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    assert samples[0]["input_ids"] == list(reference)
    prompt = template.render(messages[:-1], add_generation_prompt=True).text
    assert prompt == tokenizer.apply_chat_template(messages[:-1], tokenize=False,
                                                   add_generation_prompt=True)


def _runs(ids, labels, trained):
    """Consecutive stretches of token ids whose trained-ness equals `trained`."""
    runs, current = [], []
    for token, label in zip(ids, labels):
        if (label != IGNORE_INDEX) == trained:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_labels_cover_exactly_the_assistant_replies_and_their_end_token(tokenizer, messages):
    samples, _ = encode_conversations([messages], get_template("chatml", tokenizer), tokenizer, 1024)
    ids, labels = samples[0]["input_ids"], samples[0]["labels"]
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(ids, labels))
    trained = [tokenizer.decode(run) for run in _runs(ids, labels, True)]
    replies = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    assert trained == replies
    untrained = "".join(tokenizer.decode(run) for run in _runs(ids, labels, False))
    for m in messages:
        if m["role"] == "assistant":
            assert m["content"] not in untrained
        else:
            assert m["content"] in untrained


def test_message_with_loss_false_is_not_trained(tokenizer):
    messages = [dict(m) for m in CONVERSATIONS[1]]
    messages[2]["loss"] = False
    samples, _ = encode_conversations([messages], get_template("chatml", tokenizer), tokenizer, 1024)
    trained = [tokenizer.decode(run) for run in
               _runs(samples[0]["input_ids"], samples[0]["labels"], True)]
    assert trained == [messages[4]["content"] + "<|im_end|>"]


def test_pad_equal_to_eos_does_not_mask_the_eos_label(tokenizer):
    template = get_template("chatml", tokenizer)
    tokenizer = AutoTokenizer.from_pretrained(resolve_path("xft://tiny-llama"))
    tokenizer.pad_token = tokenizer.eos_token  # the aliasing that breaks other toolkits
    samples, _ = encode_conversations([CONVERSATIONS[0]], template, tokenizer, 1024)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert samples[0]["labels"][-2] == end_id  # the reply's <|im_end|> is trained


def test_over_long_samples_are_dropped_or_truncated_and_counted(tokenizer):
    template = get_template("chatml", tokenizer)
    long_chat = [{"role": "user", "content": "hi"},
                 {"role": "assistant", "content": "Tuna " * 200}]
    kept, stats = encode_conversations([long_chat, CONVERSATIONS[0]], template, tokenizer, 64)
    assert stats.dropped_too_long == 1 and stats.samples == 1 and len(kept) == 1
    kept, stats = encode_conversations([long_chat], template, tokenizer, 64, truncation="truncate")
    assert stats.truncated == 1 and len(kept[0]["input_ids"]) == 64
    full, _ = encode_conversations([long_chat], template, tokenizer, 10_000)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    # The reply's end-of-turn token and what follows it survive, still trained.
    assert kept[0]["input_ids"][-2:] == full[0]["input_ids"][-2:]
    assert kept[0]["labels"][-2] == end_id
    assert kept[0]["input_ids"][:62] == full[0]["input_ids"][:62]


DOCS = ["Beginners BBQ class in Missoula!\nLearn to smoke brisket.", "短文。 Another doc ends here."]


def _check_documents(tok, max_length=10_000):
    from xft.data.encode import encode_documents

    samples, stats = encode_documents(DOCS, tok, max_length)
    assert stats.samples == len(samples) == len(DOCS) and stats.split_documents == 0
    for doc, sample in zip(DOCS, samples):
        # Reference: the tokenizer's own special-token handling plus an EOS.
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        assert sample["input_ids"] == bos + tok(doc, add_special_tokens=False)["input_ids"] + \
            [tok.eos_token_id]
        assert tok.decode(sample["input_ids"], skip_special_tokens=True) == doc
        assert sample["labels"] == [IGNORE_INDEX] + sample["input_ids"][1:]
    assert stats.label_tokens == sum(len(s["input_ids"]) - 1 for s in samples)
    return samples


def test_documents_end_with_eos_and_train_every_token(tokenizer):
    samples = _check_documents(tokenizer)  # tiny-llama has no BOS token
    assert samples[0]["input_ids"][0] != tokenizer.eos_token_id


def test_documents_start_with_bos_when_the_tokenizer_has_one(shared_data):
    tok = AutoTokenizer.from_pretrained(shared_data / "tokenizers/mistral-7b-instruct-v0.3")
    samples = _check_documents(tok)
    # Mistral's own add_special_tokens=True prepends the same BOS.
    assert samples[0]["input_ids"][:-1] == tok(DOCS[0])["input_ids"]


@pytest.mark.parametrize("extra", [0, 1, 2, 15])
def test_long_documents_are_split_into_max_length_pieces(tokenizer, extra):
    from xft.data.encode import encode_documents

    (whole,), _ = encode_documents(["Tuna swims in the deep blue sea. " * 10], tokenizer, 10_000)
    # A document of 31 + extra tokens: two 16-token pieces overlapping by one cover 31.
    ids = whole["input_ids"][:30 + extra] + [tokenizer.eos_token_id]
    text = tokenizer.decode(ids[:-1])
    (whole,), _ = encode_documents([text], tokenizer, 10_000)
    assert whole["input_ids"] == ids  # the text re-tokenizes to the same ids
    pieces, stats = encode_documents([text], tokenizer, 16)
    assert stats.split_documents == 1 and stats.samples == len(pieces) == 2 + (extra > 0)
    assert all(2 <= len(p["input_ids"]) <= 16 for p in pieces)
    # Each later piece opens with the previous piece's last token as untrained context.
    rebuilt = pieces[0]["input_ids"] + [t for p in pieces[1:] for t in p["input_ids"][1:]]
    assert rebuilt == ids
    for before, after in zip(pieces, pieces[1:]):
        assert after["input_ids"][0] == before["input_ids"][-1]
    for p in pieces:
        assert p["labels"] == [IGNORE_INDEX] + p["input_ids"][1:]
    assert stats.label_tokens == len(ids) - 1  # every token but the first, exactly once
    assert [p["input_ids"][-1] == tokenizer.eos_token_id for p in pieces] == \
        [False] * (len(pieces) - 1) + [True]
