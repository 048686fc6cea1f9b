"""A cache of encoded datasets, one entry per source file.

Encoding (read → format map fn → template → tokenize) is the slow part of
building the data; its result for one file is stored under a key that hashes
everything that shapes it: the file's bytes, the format map function's code,
placeholders, the template definition, the tokenizer (its whole serialized
vocabulary, merges, normalizer and special tokens), max_length, the truncation
policy, and the source of xft's encoding modules. Any change gives a new key,
so a stale entry is never read. Mixing and packing are cheap and seeded, so
they run on every build.

An entry stores the objective's sample fields (SFT: input_ids, labels), each
field flattened into one array with its own offsets, so fields of different
lengths (a preference pair's two sides) and float fields fit alike.

Layout: <root>/datasets/<key>/{samples.npz, report.json, key.json}; entries are
written to a temporary folder and renamed into place, so a crash mid-write
never leaves a half entry behind.

ScoreCache keeps per-sample scores of a model beside them (DPO's precomputed
reference log-probs): <root>/scores/<key>/{scores.npy, key.json}, keyed on the
samples' token ids and on what decides the model's starting weights.
"""

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from xft.outputs import disk_full_as_error

CACHE_VERSION = 3  # 2: one array and offsets per objective field; 3: sample_records
# Modules whose code decides what a sample looks like (reading records included).
ENCODING_MODULES = ("xft.data.pipeline", "xft.data.conversation", "xft.data.formats",
                    "xft.data.templates", "xft.data.encode", "xft.data.questionable",
                    "xft.data.formats.preference", "xft.data.preference", "xft.data.encode_pairs")


def cache_root(cache_dir=None):
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("XFT_CACHE_DIR"):
        return Path(os.environ["XFT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xft"


def _sha256(data):
    return hashlib.sha256(data if isinstance(data, bytes) else data.encode("utf-8")).hexdigest()


def file_fingerprint(path):
    """Hash of a file's bytes, or of every file under a folder; None for a hub name."""
    path = Path(path)
    if path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return _sha256("".join(f"{p.relative_to(path)}:{file_fingerprint(p)}\n" for p in files))
    return None  # not local: nothing to hash, so it is not cached


def tokenizer_fingerprint(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    serialized = backend.to_str() if backend is not None else json.dumps(
        sorted(tokenizer.get_vocab().items()))
    specials = json.dumps(tokenizer.all_special_tokens)
    return _sha256(f"{type(tokenizer).__name__}\n{specials}\n{serialized}")


def code_fingerprint(*objects):
    """Hash of the source code of modules (a package: all its files) or functions.

    Raises OSError when an object's source cannot be read (e.g. a function
    defined in a config file MMEngine executed from a temporary copy).
    """
    import importlib

    sources = []
    for obj in objects:
        if isinstance(obj, str):
            obj = importlib.import_module(obj)
        if hasattr(obj, "__path__"):  # a package: every module in it
            for path in sorted(Path(next(iter(obj.__path__))).rglob("*.py")):
                sources.append(path.read_text(encoding="utf-8"))
        else:
            sources.append(inspect.getsource(obj))
    return _sha256("\n".join(sources))


def cache_key(parts):
    """The entry name for a dict of JSON-serializable key parts."""
    return _sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False))[:32]


def load(root, key, fields):
    """(samples, report dict) from the entry, or None when there is none."""
    entry = Path(root) / "datasets" / key
    try:
        report = json.loads((entry / "report.json").read_text(encoding="utf-8"))
        arrays = np.load(entry / "samples.npz")
        columns = {name: (arrays[name], arrays[f"{name}.offsets"]) for name in fields}
    except (OSError, ValueError, KeyError):
        return None
    count = len(next(iter(columns.values()))[1]) - 1
    samples = [{} for _ in range(count)]
    for name, (values, offsets) in columns.items():
        for sample, a, b in zip(samples, offsets[:-1], offsets[1:]):
            sample[name] = values[a:b].tolist()
    return samples, report


def save(root, key, parts, samples, report, fields):
    """Store an entry atomically; returns its folder."""

    def write(tmp):
        arrays = {}
        for name in fields:
            lengths = [len(s[name]) for s in samples]
            offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
            values = [t for s in samples for t in s[name]]
            floats = any(isinstance(t, float) for t in values)
            arrays[name] = np.array(values, dtype=np.float64 if floats else np.int64)
            arrays[f"{name}.offsets"] = offsets
        np.savez(tmp / "samples.npz", **arrays)
        (tmp / "report.json").write_text(json.dumps(report, ensure_ascii=False),
                                         encoding="utf-8")

    return _store(Path(root) / "datasets", key, parts, write)


def _store(folder, key, parts, write):
    """Write an entry into a temporary folder with `write(tmp)` and key.json, then rename
    it to folder/key; an entry another process stored meanwhile is kept."""
    folder.mkdir(parents=True, exist_ok=True)
    entry = folder / key
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder))
    try:
        with disk_full_as_error(tmp):  # a full disk: one line naming the file
            write(tmp)
            (tmp / "key.json").write_text(json.dumps(parts, indent=1, ensure_ascii=False),
                                          encoding="utf-8")
            if entry.exists():  # written meanwhile by another run with the same key
                shutil.rmtree(tmp)
            else:
                try:
                    os.replace(tmp, entry)
                except OSError:  # another process (e.g. another rank) stored it just now
                    if not entry.is_dir():
                        raise
                    shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entry


def samples_digest(samples, fields):
    """Hash of the samples' token ids, field by field, in order."""
    digest = hashlib.sha256()
    for sample in samples:
        for name in fields:
            values = np.asarray(sample[name], dtype=np.int64)
            digest.update(np.int64(len(values)).tobytes() + values.tobytes())
    return digest.hexdigest()


def files_stamp(path):
    """Names, sizes and modification times of the files under `path` (a model's weights):
    what changes when they change, without reading gigabytes on every run; None when
    `path` is not a local folder or file."""
    path = Path(path)
    if path.is_file():
        files = {path.name: path}
    elif path.is_dir():
        files = {str(p.relative_to(path)): p for p in sorted(path.rglob("*")) if p.is_file()}
    else:
        return None
    return _sha256("".join(f"{name}:{p.stat().st_size}:{p.stat().st_mtime_ns}\n"
                           for name, p in files.items()))


class ScoreCache:
    """Per-sample scores of one model's starting weights (`model_parts`: what decides
    them), stored under the cache root and found again by a resumed or repeated run."""

    def __init__(self, root, model_parts):
        self.folder = Path(root) / "scores"
        self.model_parts = model_parts

    def key(self, what, samples_key):
        parts = {"version": CACHE_VERSION, "what": what, "samples": samples_key,
                 "model": self.model_parts}
        return cache_key(parts), parts

    def load(self, what, samples_key):
        """The stored float64 array, or None."""
        key, _ = self.key(what, samples_key)
        try:
            return np.load(self.folder / key / "scores.npy")
        except (OSError, ValueError):
            return None

    def save(self, what, samples_key, scores):
        """Store `scores` (an array) atomically; returns the entry's folder."""
        key, parts = self.key(what, samples_key)
        return _store(self.folder, key, parts,
                      lambda tmp: np.save(tmp / "scores.npy", np.asarray(scores, np.float64)))
