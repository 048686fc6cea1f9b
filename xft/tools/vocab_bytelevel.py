"""`xft vocab merge` for byte-level BPE bases (GPT-2 style: Qwen2, Llama 3, xft's tiny model).

Such a tokenizer spells text as bytes mapped to printable characters and forms tokens only
through its ranked merges, so a new piece needs (1) its byte spelling and (2) a chain of
merges that builds it from what the base (and earlier new pieces) already produce. Each
piece's current tokenization is read from the `tokenizers` BPE model itself, and merges
joining those tokens left to right are appended after every existing merge; joining may
need intermediate tokens (e.g. the first two bytes of a character), which are added too
and counted. Pieces the pre-tokenizer can never keep whole (digits next to letters,
punctuation next to letters) are skipped.
"""

import json

from xft.errors import ConfigError
from xft.tools.vocab import SPACE, is_candidate

MAX_ROUNDS = 8  # rounds of "add merges, re-check"; one nearly always suffices


def byte_spelling(piece):
    """A sentencepiece piece ("▁你好") spelled in the byte-level alphabet ("Ġä½łå¥½")."""
    from tokenizers import pre_tokenizers

    spell = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return "".join(s for s, _ in spell.pre_tokenize_str(piece.replace(SPACE, " ")))


def check_bytelevel(data, base, base_path):
    model = data["model"]
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(data.get("pre_tokenizer")):
        raise ConfigError(f"base tokenizer '{base_path}' has no tokenizer.model and is not a "
                          "byte-level BPE tokenizer: xft vocab merge extends sentencepiece-"
                          "based and byte-level BPE tokenizers")
    vocab = model["vocab"]
    if sorted(vocab.values()) != list(range(len(vocab))) or \
            any(i >= len(vocab) for i in base.added_tokens_decoder):
        raise ConfigError(f"base tokenizer '{base_path}' has ids outside its BPE vocabulary "
                          "(added tokens after it): appended pieces would take their ids")


def candidate_spellings(base, add_proto, vocab, report, in_scripts=None):
    """Byte spellings of `add`'s new pieces that the pre-tokenizer keeps whole, in order."""
    pre = base.backend_tokenizer.pre_tokenizer
    spellings, seen = [], set()
    for p in add_proto.pieces:
        if not is_candidate(p, report, in_scripts):
            continue
        spelled = byte_spelling(p.piece)
        if spelled in vocab or spelled in seen:
            report.skipped_existing += 1
        elif pre is not None and len(pre.pre_tokenize_str(p.piece.replace(SPACE, " "))) != 1:
            report.skipped_unreachable += 1
        else:
            seen.add(spelled)
            spellings.append(spelled)
    return spellings


def add_merge_chains(data, spellings):
    """Append vocab entries and merges until every spelling is produced from itself.

    Returns the spellings still unreachable after MAX_ROUNDS (their entries stay)."""
    from tokenizers import Tokenizer

    model = data["model"]
    vocab, merges = model["vocab"], model["merges"]
    as_text = bool(merges) and isinstance(merges[0], str)
    known = {tuple(m.split(" ")) if as_text else tuple(m) for m in merges}
    pending = spellings
    for _ in range(MAX_ROUNDS):
        bpe = Tokenizer.from_str(json.dumps(data)).model
        todo = [(s, [t.value for t in bpe.tokenize(s)]) for s in pending]
        pending = [s for s, tokens in todo if tokens != [s]]
        if not pending:
            return []
        for spelled, tokens in todo:
            if tokens == [spelled]:
                continue
            joined = tokens[0]
            for token in tokens[1:]:
                pair, joined = (joined, token), joined + token
                vocab.setdefault(joined, len(vocab))
                if pair not in known:
                    known.add(pair)
                    merges.append(" ".join(pair) if as_text else list(pair))
    return pending


def merge_bytelevel(base, base_path, add_proto, report, in_scripts=None):
    """The base's fast tokenizer JSON with the added model's pieces; fills `report`."""
    data = json.loads(base.backend_tokenizer.to_str())
    check_bytelevel(data, base, base_path)
    vocab = data["model"]["vocab"]
    base_size = len(vocab)
    spellings = candidate_spellings(base, add_proto, vocab, report, in_scripts)
    stuck = add_merge_chains(data, spellings)
    report.skipped_unreachable += len(stuck)
    report.added = len(vocab) - base_size
    report.intermediate = report.added - (len(spellings) - len(stuck))
    return json.dumps(data, ensure_ascii=False)
