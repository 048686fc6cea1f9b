"""Vocabulary extension: `xft vocab train|merge` and model.resize_vocab.

The base is a tiny sentencepiece BPE tokenizer (byte fallback, digits split, like Llama and
Mistral) trained here on English; the extension is trained on Chinese. With shared/data,
chinese_sp is merged into the real Mistral v0.3 tokenizer.
"""

import json
import math

import pytest
import sentencepiece as spm
import torch
from conftest import run_cli, write_config
from sentencepiece import sentencepiece_model_pb2
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from xft.cli import main
from xft.config import load_config
from xft.errors import ConfigError
from xft.model.build import build_model, build_tokenizer
from xft.paths import resolve_path

EN = ["The quick brown fox jumps over the lazy dog.",
      "I am an AI assistant developed to help you.",
      "How can I help you today? Ask me anything.",
      "Numbers like 2024 and 42 are split into digits.",
      "Tokenizers turn text into pieces, and models turn pieces into text."]
ZH = ["我是一个人工智能助手，由开发者训练。", "请问有什么可以帮您？", "今天天气很好，我们去公园散步吧。",
      "人工智能可以帮助人们学习和工作。", "我们的助手会回答您的问题。", "2024年，人工智能发展很快。",
      "学习中文需要时间和耐心。", "他在2023年开始学习人工智能。", "您好，很高兴认识您！",
      "这个问题很有意思，我们一起想一想。", "中国的首都是北京，上海是一个大城市。",
      "机器学习是人工智能的一个分支。", "请把这段文字翻译成英文。", "我喜欢读书、写作和旅行。",
      "2024年的春天来得很早。", "训练模型需要数据、算力和时间。"]
EXTRA_ZH = "我们可以一起学习人工智能，今天很高兴。"


def write_jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({field: t}, ensure_ascii=False) + "\n" for t in texts),
                    encoding="utf-8")
    return path


def make_spm_base(directory):
    """A Llama-style sentencepiece tokenizer directory: tokenizer.model + tokenizer_config.

    No normalization, as in Llama and Mistral (transformers' fast tokenizer skips a
    sentencepiece normalizer, so only then do slow and fast agree on the base itself)."""
    directory.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(EN * 20), model_prefix=str(directory / "tokenizer"),
        vocab_size=330, model_type="bpe", byte_fallback=True, character_coverage=1.0,
        split_digits=True, normalization_rule_name="identity", minloglevel=2)
    (directory / "tokenizer.vocab").unlink()
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}))
    return directory


def make_tiny_llama(directory, vocab_size, tie=False):
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=tie)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Base tokenizer, Chinese sentencepiece model (trained by the CLI), merged tokenizer."""
    root = tmp_path_factory.mktemp("vocab")
    base = make_spm_base(root / "base")
    corpus = write_jsonl(root / "zh.jsonl", ZH)
    run_cli("vocab", "train", "--corpus", str(corpus), "--vocab-size", "200",
            "--model-type", "bpe", "--out", str(root / "zh_sp"))
    merged = run_cli("vocab", "merge", "--base", str(base), "--add", str(root / "zh_sp"),
                     "--out", str(root / "merged"))
    return dict(root=root, base=base, add=root / "zh_sp" / "tokenizer.model",
                merged=root / "merged", merge_output=merged.stdout, corpus=corpus)


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# ---------------------------------------------------------------- xft vocab train

@pytest.mark.slow
@pytest.mark.parametrize("model_type,size", [("bpe", 150), ("unigram", 130)])
def test_vocab_train_reads_text_files_and_record_fields(model_type, size, tmp_path, capsys):
    txt = tmp_path / "a.txt"
    txt.write_text("\n".join(ZH[:8]) + "\n", encoding="utf-8")
    records = tmp_path / "b.json"  # a JSON list, text taken from two fields
    records.write_text(json.dumps([{"q": a, "a": b} for a, b in zip(ZH[8::2], ZH[9::2])],
                                  ensure_ascii=False), encoding="utf-8")
    assert main(["vocab", "train", "--corpus", str(txt), str(records), "--text-field", "q",
                 "--text-field", "a", "--vocab-size", str(size), "--model-type", model_type,
                 "--out", str(tmp_path / "out")]) == 0
    assert f"on {len(ZH)} lines" in capsys.readouterr().out
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((tmp_path / "out" / "tokenizer.model").read_bytes())
    assert len(proto.pieces) == size
    assert proto.trainer_spec.model_type == {"unigram": 1, "bpe": 2}[model_type]
    pieces = {p.piece for p in proto.pieces}
    assert "学" in pieces and "你" not in pieces  # characters of the corpus, and only those


@pytest.mark.slow
def test_vocab_train_names_file_record_and_field_of_bad_input(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "你好"}\n{"body": "没有 text"}\n', encoding="utf-8")
    assert main(["vocab", "train", "--corpus", str(corpus), "--vocab-size", "50",
                 "--out", str(tmp_path / "out")]) == 1
    assert f"{corpus}, record 1, field 'text': missing" in capsys.readouterr().err


def test_split_long_line_keeps_every_character_within_the_byte_limit():
    from xft.tools.vocab import split_long_line

    line = "。".join(ZH * 40)  # ~2.2 KB of UTF-8, 3 bytes a character
    pieces = split_long_line(line, limit=300)
    assert "".join(pieces) == line and len(pieces) > 5
    assert all(len(p.encode("utf-8")) <= 300 for p in pieces)
    assert all(p.endswith(("。", "，", "？", "！")) for p in pieces[:-1])  # cut after punctuation
    no_breaks = "字" * 500  # nowhere better to cut: between characters, never inside one
    assert "".join(split_long_line(no_breaks, limit=100)) == no_breaks


def test_vocab_train_keeps_lines_longer_than_sentencepiece_accepts(tmp_path, capsys):
    """sentencepiece skips lines over 64 KiB; xft cuts them, so their text is learned."""
    from xft.tools.vocab import MAX_LINE_BYTES

    long_line = "，".join(["人工智能可以帮助人们学习和工作", "喵呜汪嗷"] * 3000)
    assert len(long_line.encode("utf-8")) > MAX_LINE_BYTES
    corpus = tmp_path / "long.txt"
    corpus.write_text("\n".join(ZH[:6] + [long_line, ""]) + "\n", encoding="utf-8")
    assert main(["vocab", "train", "--corpus", str(corpus), "--vocab-size", "90",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "1 lines over 65536 bytes were cut into pieces" in out
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((tmp_path / "out" / "tokenizer.model").read_bytes())
    assert "喵" in {p.piece for p in proto.pieces}  # only the long line has it


# ---------------------------------------------------------------- xft vocab merge

@pytest.mark.slow
def test_merge_appends_new_pieces_and_keeps_every_base_id(tiny):
    base = AutoTokenizer.from_pretrained(tiny["base"])
    merged = AutoTokenizer.from_pretrained(tiny["merged"])
    report = json.loads((tiny["merged"] / "xft_vocab_merge.json").read_text())
    add = sentencepiece_model_pb2.ModelProto()
    add.ParseFromString(tiny["add"].read_bytes())
    assert f"added {report['added']} tokens" in tiny["merge_output"]
    assert report["added"] > 50 and report["skipped_existing"] > 0
    assert report["added"] + report["skipped_existing"] + report["skipped_not_text"] + \
        report["skipped_digits"] + report["skipped_unreachable"] == len(add.pieces)
    assert len(merged) == len(base) + report["added"] == report["size"]
    ids = list(range(len(base)))
    assert merged.convert_ids_to_tokens(ids) == base.convert_ids_to_tokens(ids)
    # Appended pieces are the added model's, in its order.
    new = merged.convert_ids_to_tokens(list(range(len(base), len(merged))))
    order = {p.piece: i for i, p in enumerate(add.pieces)}
    assert all(p in order for p in new) and new == sorted(new, key=order.get)
    # Text the new pieces do not cover encodes as before.
    for text in EN:
        assert encode(merged, text) == encode(base, text)
    # Chinese uses the new pieces: fewer tokens, new ids.
    for text in ZH + [EXTRA_ZH]:
        ids = encode(merged, text)
        assert len(ids) < len(encode(base, text)) and max(ids) >= len(base)
        assert merged.decode(ids) == text


@pytest.mark.slow
def test_merged_slow_and_fast_tokenizers_agree(tiny):
    merged = AutoTokenizer.from_pretrained(tiny["merged"])
    slow = spm.SentencePieceProcessor(model_file=str(tiny["merged"] / "tokenizer.model"))
    for text in ZH + EN + [EXTRA_ZH, "混合 text 和 123 数字"]:
        assert encode(merged, text) == slow.encode(text), text


@pytest.mark.slow
def test_merge_keeps_digits_split_when_the_base_splits_them(tiny):
    report = json.loads((tiny["merged"] / "xft_vocab_merge.json").read_text())
    assert report["skipped_digits"] > 0  # the Chinese corpus has "2024年"
    merged = AutoTokenizer.from_pretrained(tiny["merged"])
    for token in merged.tokenize("2024年和2023年"):
        digits = sum(c.isdigit() for c in token)
        assert digits == 0 or len(token.lstrip("▁")) == 1, token


@pytest.mark.slow
def test_merge_refuses_bases_it_cannot_extend(tiny, tmp_path, capsys):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    word_level = tmp_path / "word_level"
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(
        {"a": 0, "[UNK]": 1}, unk_token="[UNK]"))).save_pretrained(word_level)
    assert main(["vocab", "merge", "--base", str(word_level), "--add", str(tiny["add"]),
                 "--out", str(tmp_path / "o")]) == 1
    assert "is not a byte-level BPE tokenizer" in capsys.readouterr().err
    assert main(["vocab", "merge", "--base", str(tiny["base"]), "--add", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 1
    assert "no sentencepiece model" in capsys.readouterr().err


def boundaries(tokenizer, ids):
    """Where the tokens of `ids` end, in bytes (a byte-level token spells one char a byte)."""
    ends, total = set(), 0
    for token in tokenizer.convert_ids_to_tokens(ids):
        total += len(token)
        ends.add(total)
    return ends


@pytest.fixture(scope="module")
def bytelevel(tiny):
    """The Chinese model merged into xft's tiny model's tokenizer (GPT-2 style byte-level
    BPE, no tokenizer.model)."""
    from xft.tools.vocab import merge_tokenizer

    out = tiny["root"] / "merged_bytelevel"
    return out, merge_tokenizer("xft://tiny-llama", tiny["add"], out)


@pytest.mark.slow
def test_merge_into_a_byte_level_bpe_base(bytelevel):
    out, report = bytelevel
    base = AutoTokenizer.from_pretrained(resolve_path("xft://tiny-llama"))
    merged = AutoTokenizer.from_pretrained(out)
    assert len(merged) == len(base) + report.added and report.added > report.intermediate > 0
    ids = list(range(len(base)))
    assert merged.convert_ids_to_tokens(ids) == base.convert_ids_to_tokens(ids)
    assert merged.chat_template == base.chat_template
    # Every Chinese text encodes to fewer tokens, new ones among them, and decodes back.
    for text in ZH + [EXTRA_ZH]:
        new_ids = encode(merged, text)
        assert len(new_ids) < len(encode(base, text)) and max(new_ids) >= len(base)
        assert merged.decode(new_ids) == text
    # Whole pieces of the added model are single tokens.
    assert encode(merged, "人工智能") == [merged.convert_tokens_to_ids(
        "".join(merged.convert_ids_to_tokens(encode(merged, "人工智能"))))]
    # English: base merges rank first, so new tokens only join base tokens.
    for text in EN:
        before, after = encode(base, text), encode(merged, text)
        assert merged.decode(after) == text
        assert boundaries(merged, after) <= boundaries(base, before)


@pytest.mark.slow
def test_merging_chinese_sp_into_mistral_cuts_tokens_per_character(shared_data, tmp_path):
    """The real recipe: chinese_sp (20000 unigram pieces) into Mistral v0.3 (32768, BPE)."""
    from xft.tools.vocab import merge_tokenizer

    base_dir = shared_data / "tokenizers" / "mistral-7b-instruct-v0.3"
    add = shared_data / "tokenizers" / "chinese_sp" / "chinese_sp.model"
    zh = json.loads((shared_data / "datasets/alpaca/alpaca_zh_demo.json").read_text("utf-8"))
    en = json.loads((shared_data / "datasets/alpaca/alpaca_en_demo.json").read_text("utf-8"))
    fields = ("instruction", "input", "output")
    zh_texts = [r[k] for r in zh for k in fields if r[k]]
    en_texts = [r[k] for r in en[:300] for k in fields if r[k]]
    base = AutoTokenizer.from_pretrained(base_dir)
    base_tokens = sum(len(encode(base, t)) for t in zh_texts)
    chars = sum(len(t) for t in zh_texts)
    ids = list(range(len(base)))
    reductions = {}
    for keep_digits in (False, True):
        out = tmp_path / f"digits_{keep_digits}"
        report = merge_tokenizer(base_dir, add, out, keep_digit_pieces=keep_digits)
        merged = AutoTokenizer.from_pretrained(out)
        assert len(merged) == len(base) + report.added
        assert merged.convert_ids_to_tokens(ids) == base.convert_ids_to_tokens(ids)
        merged_tokens = [encode(merged, t) for t in zh_texts]
        reductions[keep_digits] = 1 - sum(map(len, merged_tokens)) / base_tokens
        slow = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
        assert all(slow.encode(t) == m for t, m in zip(zh_texts[:500], merged_tokens))
        changed = 0
        for text in en_texts:
            before, after = encode(base, text), encode(merged, text)
            if before != after:  # new pieces only ever join base tokens
                changed += 1
                assert merged.convert_ids_to_tokens(after) and \
                    "".join(merged.convert_ids_to_tokens(after)) == \
                    "".join(base.convert_ids_to_tokens(before))
        if not keep_digits:  # English changes only where chinese_sp has English pieces
            assert changed <= len(en_texts) // 100, changed
    print(f"tokens per character {base_tokens / chars:.3f}; reduction: "
          f"{reductions[False]:.1%} (digits split), {reductions[True]:.1%} (all pieces)")
    assert reductions[True] >= 0.40  # the Chinese-LLaMA recipe: every new piece
    assert reductions[False] >= 0.38  # keeping Mistral's split digits costs ~1.5 points


@pytest.mark.slow
def test_han_only_merge_into_mistral_changes_no_english_text(shared_data, tmp_path):
    """chinese_sp holds a few English pieces that re-split 5 of the 2410 English Alpaca
    texts (test above); with --scripts Han none changes and Chinese still shrinks."""
    from xft.tools.vocab import merge_tokenizer

    base_dir = shared_data / "tokenizers" / "mistral-7b-instruct-v0.3"
    add = shared_data / "tokenizers" / "chinese_sp" / "chinese_sp.model"
    en = json.loads((shared_data / "datasets/alpaca/alpaca_en_demo.json").read_text("utf-8"))
    zh = json.loads((shared_data / "datasets/alpaca/alpaca_zh_demo.json").read_text("utf-8"))
    fields = ("instruction", "input", "output")
    en_texts = [r[k] for r in en for k in fields if r[k]]
    zh_texts = [r[k] for r in zh[:300] for k in fields if r[k]]
    base = AutoTokenizer.from_pretrained(base_dir)
    report = merge_tokenizer(base_dir, add, tmp_path / "han", scripts=("Han",))
    merged = AutoTokenizer.from_pretrained(tmp_path / "han")
    assert report.skipped_other_script > 0
    assert sum(encode(merged, t) != encode(base, t) for t in en_texts) == 0
    reduction = 1 - (sum(len(encode(merged, t)) for t in zh_texts)
                     / sum(len(encode(base, t)) for t in zh_texts))
    assert reduction >= 0.35, reduction


# ---------------------------------------------------------------- model.resize_vocab

def resize_experiment(tiny, model_dir, init, method, **extra):
    return load_config(str(write_config(tiny["root"], f"""
model = dict(path={str(model_dir)!r}, resize_vocab=dict(init={init!r},
             base_tokenizer={str(tiny['base'])!r}))
tokenizer = dict(path={str(tiny['merged'])!r})
template = 'default'
datasets = [dict(path={str(tiny['corpus'])!r}, format='pretrain')]
method = {method!r}
{extra.get('tail', '')}
""", name=f"resize_{init}.py")))[1]


@pytest.fixture(scope="module")
def untied_model(tiny):
    base = AutoTokenizer.from_pretrained(tiny["base"])
    return make_tiny_llama(tiny["root"] / "model_untied", len(base))


@pytest.mark.slow
def test_subword_mean_rows_are_the_mean_of_the_base_pieces_rows(tiny, untied_model):
    experiment = resize_experiment(tiny, untied_model, "subword_mean", dict(type="full"))
    tokenizer = build_tokenizer(experiment.tokenizer, experiment.model.path)
    model = build_model(experiment.model, experiment.method, tokenizer, log=lambda *_: None)
    original = LlamaForCausalLM.from_pretrained(untied_model)
    old_in = original.get_input_embeddings().weight.detach()
    old_out = original.get_output_embeddings().weight.detach()
    n_base = old_in.shape[0]
    new_in = model.get_input_embeddings().weight.detach()
    new_out = model.get_output_embeddings().weight.detach()
    assert new_in.shape[0] == new_out.shape[0] == len(tokenizer) > n_base
    assert torch.equal(new_in[:n_base], old_in) and torch.equal(new_out[:n_base], old_out)
    # Independent split: the base sentencepiece model itself, on the piece's text, with
    # its dummy "▁" prefix and whitespace trimming turned off so the piece is split
    # exactly as written.
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((tiny["base"] / "tokenizer.model").read_bytes())
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    base_sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    for token_id in range(n_base, len(tokenizer)):
        piece = tokenizer.convert_ids_to_tokens(token_id)
        split = base_sp.encode(piece.replace("▁", " "))
        assert split and max(split) < n_base
        assert torch.allclose(new_in[token_id], old_in[split].mean(0), atol=1e-6), piece
        assert torch.allclose(new_out[token_id], old_out[split].mean(0), atol=1e-6), piece


@pytest.mark.slow
def test_mean_rows_are_the_mean_of_the_old_rows(tiny, untied_model):
    experiment = resize_experiment(tiny, untied_model, "mean", dict(type="full"))
    model = build_model(experiment.model, experiment.method, build_tokenizer(experiment.tokenizer, experiment.model.path), log=lambda *_: None)
    original = LlamaForCausalLM.from_pretrained(untied_model)
    for old, new in ((original.get_input_embeddings(), model.get_input_embeddings()),
                     (original.get_output_embeddings(), model.get_output_embeddings())):
        n = old.weight.shape[0]
        expected = old.weight.detach().mean(0)
        assert torch.allclose(new.weight[n:], expected.expand_as(new.weight[n:]), atol=1e-6)


@pytest.mark.slow
def test_resized_embeddings_must_train(tiny, untied_model):
    experiment = resize_experiment(tiny, untied_model, "mean", dict(type="lora"))
    with pytest.raises(ConfigError, match="would not train; add them to method.modules_to_save"):
        build_model(experiment.model, experiment.method, build_tokenizer(experiment.tokenizer, experiment.model.path), log=lambda *_: None)


@pytest.mark.slow
def test_lora_after_extension_trains_new_embeddings_with_falling_loss(tiny, untied_model,
                                                                      tmp_path):
    from xft.engine.train import train

    cfg = write_config(tmp_path, f"""
model = dict(path={str(untied_model)!r}, resize_vocab=dict(init='subword_mean',
             base_tokenizer={str(tiny['base'])!r}))
tokenizer = dict(path={str(tiny['merged'])!r})
template = 'default'
datasets = [dict(path={str(tiny['corpus'])!r}, format='pretrain')]
data = dict(max_length=64)
method = dict(type='lora', r=8, alpha=16, dropout=0.0,
              modules_to_save=['embed_tokens', 'lm_head'])
optim = dict(lr=1e-2)
train = dict(batch_size=4, max_steps=12, log_interval=1, warmup_ratio=0.0,
             lr_scheduler='constant')
""")
    hf_dir = train(str(cfg), work_dir=tmp_path / "work")
    losses = [json.loads(line)["loss"] for line in (tmp_path / "work/metrics.jsonl").open()]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    # The adapter carries the trained, resized embeddings and head.
    from safetensors.torch import load_file

    weights = load_file(hf_dir / "adapter_model.safetensors")
    merged_size = len(AutoTokenizer.from_pretrained(tiny["merged"]))
    rows = {k: v.shape[0] for k, v in weights.items() if "embed_tokens" in k or "lm_head" in k}
    assert rows and set(rows.values()) == {merged_size}, rows
    # Each once: the trained copies only, not peft's default frozen original and base layer.
    assert sorted(rows) == ["base_model.model.lm_head.weight",
                            "base_model.model.model.embed_tokens.weight"], rows


@pytest.mark.slow
def test_subword_mean_on_a_tied_byte_level_model(tiny, bytelevel, tmp_path):
    """xft's tiny model ties its head to the embeddings; new rows follow the base split."""
    out, _ = bytelevel
    experiment = load_config(str(write_config(tmp_path, f"""
model = dict(path='xft://tiny-llama', resize_vocab=dict(init='subword_mean'))
tokenizer = dict(path={str(out)!r})
template = 'chatml'
datasets = [dict(path={str(tiny['corpus'])!r}, format='pretrain')]
method = dict(type='full')
""")))[1]
    tokenizer = build_tokenizer(experiment.tokenizer, experiment.model.path)
    model = build_model(experiment.model, experiment.method, tokenizer, log=lambda *_: None)
    base = AutoTokenizer.from_pretrained(resolve_path("xft://tiny-llama"))
    old = LlamaForCausalLM.from_pretrained(resolve_path("xft://tiny-llama"))
    old = old.get_input_embeddings().weight.detach()
    new = model.get_input_embeddings().weight.detach()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert new.shape[0] == len(tokenizer) and torch.equal(new[:len(base)], old)
    # Independent split: the base tokenizer encoding each new token's text, for the tokens
    # whose bytes are whole characters (intermediate tokens hold parts of characters).
    checked = 0
    for token_id in range(len(base), len(tokenizer)):
        text = tokenizer.decode([token_id])
        if "\ufffd" in text or encode(tokenizer, text) != [token_id]:
            continue
        split = encode(base, text)
        assert torch.allclose(new[token_id], old[split].mean(0), atol=1e-6), text
        checked += 1
    assert checked > 100


def test_merge_of_a_bare_sentencepiece_model_sets_bos_and_eos(tiny, tmp_path, capsys):
    """A base that is only tokenizer.model has no tokenizer_config.json naming BOS/EOS; the
    merged tokenizer (tokenizer.json + tokenizer.model) would have none, so the merge takes
    them from the sentencepiece model, and training can add them."""
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "tokenizer.model").write_bytes((tiny["base"] / "tokenizer.model").read_bytes())
    assert main(["vocab", "merge", "--base", str(bare), "--add", str(tiny["add"]),
                 "--out", str(tmp_path / "merged")]) == 0
    assert "named no bos_token (set to '<s>'" in capsys.readouterr().out
    merged = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert (merged.bos_token, merged.eos_token, merged.unk_token) == ("<s>", "</s>", "<unk>")
    assert merged.convert_tokens_to_ids("</s>") == 2


@pytest.fixture(scope="module")
def mixed_add(tiny):
    """A sentencepiece model trained on English and Chinese together."""
    root = tiny["root"]
    corpus = write_jsonl(root / "mixed.jsonl", ZH + EN * 4)
    run_cli("vocab", "train", "--corpus", str(corpus), "--vocab-size", "400",
            "--model-type", "bpe", "--out", str(root / "mixed_sp"))
    return root / "mixed_sp" / "tokenizer.model"


@pytest.mark.parametrize("base", ["spm", "bytelevel"])
@pytest.mark.slow
def test_merge_restricted_to_han_leaves_english_tokenization_alone(tiny, mixed_add, base,
                                                                   tmp_path):
    from xft.tools.vocab import merge_tokenizer

    base_dir = tiny["base"] if base == "spm" else resolve_path("xft://tiny-llama")
    base_tok = AutoTokenizer.from_pretrained(base_dir)
    changed = {}
    for scripts in ((), ("Han",)):
        out = tmp_path / ("han" if scripts else "all")
        report = merge_tokenizer(base_dir, mixed_add, out, scripts=scripts)
        merged = AutoTokenizer.from_pretrained(out)
        changed[scripts] = sum(encode(merged, t) != encode(base_tok, t) for t in EN)
        assert sum(len(encode(merged, t)) for t in ZH) < sum(len(encode(base_tok, t)) for t in ZH)
    assert changed[()] > 0  # the mixed model's English pieces do change English text...
    assert changed[("Han",)] == 0  # ...unless only Han pieces are added
    assert report.skipped_other_script > 0 and report.scripts == ("Han",)


def test_merge_names_an_unknown_script(tiny, tmp_path, capsys):
    assert main(["vocab", "merge", "--base", str(tiny["base"]), "--add", str(tiny["add"]),
                 "--out", str(tmp_path / "o"), "--scripts", "Klingonish"]) == 1
    assert "--scripts Klingonish" in capsys.readouterr().err
