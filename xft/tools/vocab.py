"""`xft vocab train` and `xft vocab merge`: extend a tokenizer's vocabulary.

train  a sentencepiece model (BPE or unigram) on raw text: .txt files (every
       line is a sentence) or dataset files (.json / .jsonl / .csv / .parquet)
       whose records hold the text in named fields.
merge  append the pieces of such a model that the base tokenizer lacks to a
       sentencepiece-based base tokenizer (Llama, Mistral, ...; see
       `merge_into_sentencepiece`) or a byte-level BPE one (Qwen2, Llama 3; see
       xft.tools.vocab_bytelevel). Every base id keeps its token.
"""

import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from xft.errors import ConfigError, DataError
from xft.paths import resolve_path

SPM_FILE = "tokenizer.model"  # the name under which transformers finds a sentencepiece model
MERGE_REPORT = "xft_vocab_merge.json"
TEXT_SUFFIXES = (".txt", ".text")
# Files of the base tokenizer that carry over to the merged one. tokenizer.json is rebuilt
# from the merged sentencepiece model, so slow and fast tokenizers agree.
CARRIED_FILES = ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
NORMAL = 1  # sentencepiece ModelProto.SentencePiece.Type.NORMAL
SPACE = "\u2581"  # "▁", sentencepiece's spelling of a space
# sentencepiece skips (with only a log line) every input line longer than its
# max_sentence_length, in UTF-8 bytes; xft splits longer lines into pieces of at most
# this size instead, so no text of the corpus is left out.
MAX_LINE_BYTES = 1 << 16
# Where a long line may be cut, best first: after whitespace or sentence punctuation.
CUT_AFTER = re.compile(r"[\s。！？；，、.!?;,]")


# ---------------------------------------------------------------- training

@dataclass
class CorpusStats:
    """What the corpus gave sentencepiece: nothing is left out without a count."""

    lines: int = 0  # lines handed to sentencepiece
    split_lines: int = 0  # corpus lines longer than MAX_LINE_BYTES, cut into several
    empty_lines: int = 0  # blank lines (nothing to learn from)
    bytes: int = 0

    def line(self):
        split = (f"; {self.split_lines} lines over {MAX_LINE_BYTES} bytes were cut into "
                 "pieces (sentencepiece would skip them)" if self.split_lines else "")
        return f"{self.lines} lines, {self.bytes} bytes of text{split}"


def split_long_line(line, limit=MAX_LINE_BYTES):
    """`line` cut into pieces of at most `limit` UTF-8 bytes, preferably after whitespace or
    punctuation, otherwise between characters; joined, the pieces give the line back."""
    pieces = []
    while len(line.encode("utf-8")) > limit:
        head = line.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
        cuts = [m.end() for m in CUT_AFTER.finditer(head)]
        end = cuts[-1] if cuts and cuts[-1] > len(head) // 2 else len(head)
        pieces.append(line[:end])
        line = line[end:]
    pieces.append(line)
    return pieces


def corpus_lines(paths, text_fields=("text",), stats=None):
    """Yield the corpus's non-empty lines; errors name the file, record and field."""
    from xft.data.pipeline import read_records

    for path in paths:
        resolved = Path(resolve_path(path))
        if resolved.suffix.lower() in TEXT_SUFFIXES:
            if not resolved.is_file():
                raise DataError("file not found", file=path)
            try:
                text = resolved.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError as e:
                raise DataError(f"not valid UTF-8 ({e.reason} at byte {e.start})",
                                file=path) from None
            yield from _counted(text.splitlines(), stats)
            continue
        for index, record in enumerate(read_records(path)):
            if not isinstance(record, dict):
                raise DataError(f"record must be an object, got {type(record).__name__}",
                                file=path, index=index)
            for name in text_fields:
                value = record.get(name)
                if not isinstance(value, str):
                    reason = "missing" if name not in record else \
                        f"must be a string, got {type(value).__name__}"
                    raise DataError(f"{reason} (choose the text fields with --text-field)",
                                    file=path, index=index, field=name)
                yield from _counted(value.splitlines(), stats)


def _counted(lines, stats):
    """Non-empty lines, long ones split (see split_long_line), counted in `stats`."""
    stats = stats if stats is not None else CorpusStats()
    for line in lines:
        if not line.strip():
            stats.empty_lines += 1
            continue
        pieces = split_long_line(line)
        stats.split_lines += len(pieces) > 1
        stats.lines += len(pieces)
        stats.bytes += len(line.encode("utf-8"))
        yield from pieces


def train_vocab(corpus, out_dir, vocab_size, model_type="bpe", text_fields=("text",),
                character_coverage=0.9995):
    """Train a sentencepiece model on the corpus.

    Returns (path of OUT/tokenizer.model, CorpusStats)."""
    import sentencepiece as spm

    stats = CorpusStats()
    lines = list(corpus_lines(corpus, text_fields, stats))
    if not lines:
        raise DataError(f"the corpus ({', '.join(map(str, corpus))}) holds no text")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = out / Path(SPM_FILE).stem
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=str(prefix), vocab_size=vocab_size,
            model_type=model_type, character_coverage=character_coverage,
            # Pieces as they appear in raw text: the bases this vocabulary is merged into
            # (Llama, Mistral) do not normalize, so NFKC-folded pieces ("，" → ",") would
            # not match their input.
            normalization_rule_name="identity",
            # Lines are sentences or paragraphs; none is longer than this (split_long_line).
            max_sentence_length=MAX_LINE_BYTES,
            # Warnings stay visible (e.g. characters left to <unk> by character_coverage);
            # sentencepiece's progress lines (INFO) do not.
            minloglevel=1)
    except RuntimeError as e:  # e.g. "Vocabulary size too high (N). Please set it to a value <= M."
        raise ConfigError(f"sentencepiece training failed: {e}") from None
    return out / SPM_FILE, stats


# ---------------------------------------------------------------- merging

@dataclass
class MergeReport:
    base: str
    add: str
    base_size: int  # tokens of the base (its sentencepiece pieces, if it has a model)
    added: int  # pieces appended
    skipped_existing: int  # already in the base
    skipped_not_text: int  # control, unknown, byte pieces of the added model
    skipped_digits: int  # digits joined to other characters, where the base splits digits
    skipped_unreachable: int  # BPE merges (or the pre-tokenizer) can never produce them
    intermediate: int = 0  # byte-level bases: tokens added only to build a piece
    size: int = 0  # tokens in the merged tokenizer
    add_normalization: str = "identity"  # the added model's sentencepiece normalizer
    scripts: tuple = ()  # with --scripts: only pieces written in these Unicode scripts
    skipped_other_script: int = 0  # pieces with a character outside `scripts`
    special_tokens_set: tuple = ()  # BOS/EOS/UNK the base lacked, taken from its model

    def lines(self):
        digits = (f"{self.skipped_digits} joining digits to other characters (the base splits "
                  "digits), " if self.skipped_digits else "")
        lines = [f"base {self.base}: {self.base_size} tokens; adding from {self.add}",
                 f"added {self.added} tokens (ids {self.base_size}..{self.size - 1}); skipped "
                 f"{self.skipped_existing} pieces already in the base, {self.skipped_not_text} "
                 f"control/byte/unknown pieces, {digits}{self.skipped_unreachable} that merges "
                 "cannot produce" + (f"; {self.intermediate} of the added tokens are "
                                     "intermediate steps of byte-level merges"
                                     if self.intermediate else ""),
                 f"merged tokenizer: {self.size} tokens"]
        if self.scripts:
            lines.append(f"only pieces in the scripts {', '.join(self.scripts)} were added; "
                         f"{self.skipped_other_script} others skipped")
        if self.special_tokens_set:
            lines.append("the base tokenizer named no " + ", ".join(
                f"{name} (set to {token!r} from its sentencepiece model)"
                for name, token in self.special_tokens_set))
        if self.add_normalization != "identity":
            lines.append(f"note: the added model was trained on {self.add_normalization}-"
                         "normalized text; its pieces holding normalized characters (e.g. ',' "
                         "for '，') will not match raw text")
        return lines


def find_spm(path, role):
    """The sentencepiece model file given as a file or as a directory holding one."""
    p = Path(resolve_path(path))
    if p.is_file():
        return p
    if p.is_dir():
        if (p / SPM_FILE).is_file():
            return p / SPM_FILE
        models = sorted(p.glob("*.model"))
        if len(models) == 1:
            return models[0]
        if models:
            raise ConfigError(f"{role} '{path}' holds several .model files "
                              f"({', '.join(m.name for m in models)}); name one")
    raise ConfigError(f"{role} '{path}': no sentencepiece model (a .model file or a directory "
                      f"with {SPM_FILE})")


def load_proto(path):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except Exception as e:  # protobuf's DecodeError
        raise ConfigError(f"'{path}' is not a sentencepiece model: {e}") from None
    return proto


def scores_below(floor, count):
    """`count` float32 scores, strictly decreasing, all below `floor`.

    sentencepiece BPE merges the pair whose merged piece scores highest, and the fast
    tokenizer converted from it ranks merges by id; pieces appended with ever lower scores
    therefore merge after every base piece, in the order given, in both.
    """
    import numpy as np

    scores, value = [], np.float32(floor)
    for _ in range(count):
        value = np.nextafter(value, np.float32(-np.inf), dtype=np.float32)
        scores.append(float(value))
    return scores


def script_filter(scripts):
    """A predicate: is a piece written only in `scripts` (Unicode script names such as Han,
    Hiragana, Cyrillic; the space mark ▁ aside)? None when no scripts are given.

    Adding only, say, Han pieces leaves the tokenization of text in other scripts as the
    base had it, even when the added model was trained on a mixed corpus. The third-party
    `regex` module (a transformers dependency) knows Unicode scripts; `re` does not.
    """
    if not scripts:
        return None
    import regex

    try:
        pattern = regex.compile("^[" + "".join(f"\\p{{Script={s}}}" for s in scripts)
                                + SPACE + "]+$")
    except regex.error as e:
        raise ConfigError(f"--scripts {' '.join(scripts)}: {e} (use Unicode script names such "
                          "as Han, Latin, Cyrillic, Hiragana)") from None
    return lambda piece: pattern.match(piece) is not None


def is_candidate(p, report, in_scripts):
    """Whether the added model's piece `p` is text of the wanted scripts; counts it if not."""
    if p.type != NORMAL:
        report.skipped_not_text += 1
        return False
    if in_scripts is not None and not in_scripts(p.piece):
        report.skipped_other_script += 1
        return False
    return True


def candidate_pieces(base, add, report, keep_digit_pieces=False, in_scripts=None):
    """Normal pieces of `add` to append to `base`, in `add`'s order (best first)."""
    have = {p.piece for p in base.pieces}
    split_digits = base.trainer_spec.split_digits and not keep_digit_pieces
    pieces = []
    for p in add.pieces:
        if not is_candidate(p, report, in_scripts):
            continue
        if p.piece in have:
            report.skipped_existing += 1
        elif split_digits and len(p.piece) > 1 and any(c.isdigit() for c in p.piece):
            report.skipped_digits += 1
        else:
            have.add(p.piece)
            pieces.append(p.piece)
    return pieces


def merged_proto(base_proto, pieces):
    """The base sentencepiece model with `pieces` appended (for the slow tokenizer)."""
    from sentencepiece import sentencepiece_model_pb2

    merged = sentencepiece_model_pb2.ModelProto()
    merged.CopyFrom(base_proto)
    for piece, score in zip(pieces, scores_below(min(p.score for p in base_proto.pieces),
                                                 len(pieces))):
        merged.pieces.add(piece=piece, score=score, type=NORMAL)
    merged.trainer_spec.vocab_size = len(merged.pieces)
    return merged


def extended_bpe(tokenizer_json, pieces):
    """The fast tokenizer's JSON with `pieces` appended to its BPE vocabulary.

    The base's merges keep their ranks; each new piece gets a merge for every way to
    split it into two vocabulary entries (as transformers converts a sentencepiece BPE
    model), ranked after all base merges in the pieces' order: the same priority as the
    scores given in `merged_proto`.
    """
    data = json.loads(tokenizer_json)
    model = data["model"]
    if model.get("type") != "BPE":
        raise ConfigError(f"xft vocab merge extends BPE tokenizers; this base's fast tokenizer "
                          f"is {model.get('type')}")
    vocab, merges = model["vocab"], model["merges"]
    merges_as_text = bool(merges) and isinstance(merges[0], str)
    for piece in pieces:
        vocab[piece] = len(vocab)
    for piece in pieces:
        splits = sorted(((piece[:i], piece[i:]) for i in range(1, len(piece))
                         if piece[:i] in vocab and piece[i:] in vocab),
                        key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        merges.extend(" ".join(pair) if merges_as_text else list(pair) for pair in splits)
    return json.dumps(data, ensure_ascii=False)


def write_files(base_dir, out, files):
    """`files` (name → bytes) and the base's config files into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (out / name).write_bytes(content)
    for name in CARRIED_FILES:
        if (base_dir / name).is_file():
            shutil.copy(base_dir / name, out / name)


def unreachable(tokenizer, pieces):
    """Pieces the fast tokenizer's BPE model does not produce from their own text."""
    model = tokenizer.backend_tokenizer.model
    if type(model).__name__ != "BPE":
        return []
    return [p for p in pieces if [t.value for t in model.tokenize(p)] != [p]]


def check_base_ids(base, merged):
    """Fail loudly if a base id changed token: a model trained on the base would be broken."""
    ids = list(range(len(base)))
    if merged.convert_ids_to_tokens(ids) != base.convert_ids_to_tokens(ids):
        raise ConfigError("internal error: the merged tokenizer renumbered base tokens")


def merge_tokenizer(base_path, add_path, out_dir, keep_digit_pieces=False, scripts=()):
    """Append the new pieces of the sentencepiece model `add_path` to the tokenizer in
    `base_path` (sentencepiece-based, or byte-level BPE) and save it to `out_dir`.

    Base ids never change, and new tokens are ranked after every base merge, so text the
    new pieces cannot cover encodes as before. Returns a MergeReport (also written to
    OUT/xft_vocab_merge.json).
    """
    from transformers import AutoTokenizer

    base_dir = Path(resolve_path(base_path))
    if not base_dir.is_dir():
        raise ConfigError(f"base tokenizer '{base_path}' is not a directory")
    add_file = find_spm(add_path, "--add")
    add_proto = load_proto(add_file)
    try:
        base = AutoTokenizer.from_pretrained(str(base_dir))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load base tokenizer '{base_path}': {e}") from None
    report = MergeReport(str(base_path), str(add_file), len(base), 0, 0, 0, 0, 0,
                         add_normalization=add_proto.normalizer_spec.name or "identity",
                         scripts=tuple(scripts))
    in_scripts = script_filter(scripts)
    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="xft-vocab-") as tmp:
        tmp = Path(tmp)
        if (base_dir / SPM_FILE).is_file():
            merged = merge_into_sentencepiece(base_dir, base, add_proto, report,
                                              keep_digit_pieces, tmp, in_scripts)
            merged = with_special_tokens(merged, load_proto(base_dir / SPM_FILE), report, tmp)
        else:
            from xft.tools.vocab_bytelevel import merge_bytelevel

            tokenizer_json = merge_bytelevel(base, base_path, add_proto, report, in_scripts)
            write_files(base_dir, tmp, {"tokenizer.json": tokenizer_json.encode("utf-8")})
            merged = AutoTokenizer.from_pretrained(str(tmp))
        check_base_ids(base, merged)
        out.mkdir(parents=True, exist_ok=True)
        for item in tmp.iterdir():
            shutil.copy(item, out / item.name)
    report.size = len(merged)
    (out / MERGE_REPORT).write_text(json.dumps(asdict(report), indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    return report


def with_special_tokens(merged, base_proto, report, tmp):
    """The merged tokenizer with BOS/EOS/UNK set from the sentencepiece model where the base
    tokenizer named none (a bare tokenizer.model, with no tokenizer_config.json): without
    them training would build samples with no BOS and no EOS to learn to stop."""
    from transformers import AutoTokenizer

    spec = base_proto.trainer_spec
    missing = [(name, base_proto.pieces[index].piece)
               for name, index in (("bos_token", spec.bos_id), ("eos_token", spec.eos_id),
                                   ("unk_token", spec.unk_id))
               if getattr(merged, name) is None and 0 <= index < len(base_proto.pieces)]
    if not missing:
        return merged
    for name, token in missing:
        setattr(merged, name, token)
    merged.save_pretrained(str(tmp))
    report.special_tokens_set = tuple(missing)
    return AutoTokenizer.from_pretrained(str(tmp))


def merge_into_sentencepiece(base_dir, base, add_proto, report, keep_digit_pieces, tmp,
                             in_scripts=None):
    """Merge into a sentencepiece-based base; the merged tokenizer, written to `tmp`.

    New pieces get ids after the base's and scores below every base piece, so the base's
    merges always apply first and new pieces only ever join base tokens. Pieces are
    skipped when the base has them, when they are not text (control, byte, unknown), when
    they join digits to other characters while the base splits digits (unless
    `keep_digit_pieces`), and (BPE base) when no merge of two pieces produces them. The
    sentencepiece model (slow tokenizer) and tokenizer.json (fast) are extended side by
    side with the same priorities.
    """
    from transformers import AutoTokenizer

    base_proto = load_proto(base_dir / SPM_FILE)
    report.base_size = len(base_proto.pieces)
    beyond = sorted(i for i in base.added_tokens_decoder if i >= len(base_proto.pieces))
    if beyond:
        raise ConfigError(f"base tokenizer '{report.base}' has added tokens after its "
                          f"sentencepiece pieces (ids {beyond[:5]}...): appended pieces would "
                          "take their ids")
    base_json = base.backend_tokenizer.to_str()
    if len(json.loads(base_json)["model"]["vocab"]) != len(base_proto.pieces):
        raise ConfigError(f"base tokenizer '{report.base}': its tokenizer.json and {SPM_FILE} "
                          "hold different vocabularies")
    pieces = candidate_pieces(base_proto, add_proto, report, keep_digit_pieces, in_scripts)
    # Drop unreachable pieces until none are left (dropping one can, rarely, strand
    # another that only it led to).
    while True:
        write_files(base_dir, tmp, {
            SPM_FILE: merged_proto(base_proto, pieces).SerializeToString(),
            "tokenizer.json": extended_bpe(base_json, pieces).encode("utf-8")})
        merged = AutoTokenizer.from_pretrained(str(tmp))
        dead = set(unreachable(merged, pieces))
        if not dead:
            break
        report.skipped_unreachable += len(dead)
        pieces = [p for p in pieces if p not in dead]
    report.added = len(pieces)
    return merged
