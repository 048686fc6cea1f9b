"""Format map functions: one raw dataset record → a conversation or a document.

A map function takes the record (a dict) and returns either a list of messages
(a conversation, see xft.data.conversation) or a str (a document for
pretraining, see xft.data.encode.encode_documents). It raises RecordError
naming the field when the record is unusable; the pipeline adds the file and
record index. A config names a function of FORMATS, or passes its own callable
(`datasets=[dict(path=..., format=my_fn)]` with `def my_fn(record): ...` in the
config file); tools that take no config (`xft eval --format`, `xft template render
--format`, heldout.jsonl lines) name such a function as "CONFIG.py:NAME". A named format
reads records with other field and role names through a declarative mapping (`columns` /
`tags`, see xft.data.formats.mapping).
"""

import functools
from pathlib import Path

from xft.data.conversation import check_conversation
from xft.data.formats.chat import alpaca, alpaca_zh, guanaco, openai, qa, sharegpt
from xft.data.formats.mapping import FieldMapping
from xft.data.formats.moss import moss
from xft.data.formats.pretrain import pretrain
from xft.data.formats.xtuner import xtuner, xtuner_pretrain
from xft.data.heldout import heldout
from xft.errors import ConfigError, RecordError, did_you_mean
from xft.paths import resolve_path

FORMATS = {
    "alpaca": alpaca,
    "alpaca_zh": alpaca_zh,
    "openai": openai,
    "sharegpt": sharegpt,
    "moss": moss,
    "guanaco": guanaco,
    "oasst": guanaco,  # OpenAssistant data in Guanaco's "### Human/### Assistant" text form
    "qa": qa,
    "pretrain": pretrain,
    "xtuner": xtuner,
    "xtuner_pretrain": xtuner_pretrain,
    "heldout": heldout,  # a run's heldout.jsonl (xft.data.heldout)
}


def get_format(fmt):
    """The map function for a format name or "CONFIG.py:NAME", or `fmt` itself when it is
    a callable."""
    if callable(fmt):
        return fmt
    if isinstance(fmt, str) and ".py:" in fmt:
        return config_function(fmt)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown dataset format '{fmt}'{did_you_mean(fmt, FORMATS)} (known: "
                          f"{', '.join(sorted(FORMATS))}, a function record → messages, or "
                          "CONFIG.py:NAME, a function a config file defines)")
    return FORMATS[fmt]


@functools.lru_cache(maxsize=None)
def config_function(spec):
    """The map function NAME of "CONFIG.py:NAME": a function the config's values use
    (loaded by MMEngine as training loads the config, `_base_` files included)."""
    from mmengine.config import Config

    file, _, name = spec.rpartition(":")
    path = Path(resolve_path(file))
    if not path.is_file():
        raise ConfigError(f"format '{spec}': config file '{file}' not found")
    try:
        values = Config.fromfile(str(path)).to_dict()
    except Exception as e:  # syntax errors, missing _base_ files, ...
        raise ConfigError(f"format '{spec}': cannot load {file}: {e}") from None
    found = {}
    _collect_functions(values, found)
    if name not in found:
        raise ConfigError(f"format '{spec}': {file} uses no function named '{name}' (its "
                          f"functions: {', '.join(sorted(found)) or 'none'})")
    return found[name]


def _collect_functions(value, found):
    # MMEngine drops a config's top-level functions from its values; the ones the config
    # uses (e.g. a dataset's format) are inside them.
    if callable(value):
        found.setdefault(getattr(value, "__name__", ""), value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_functions(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect_functions(item, found)


def format_name(fmt):
    return fmt if isinstance(fmt, str) else getattr(fmt, "__name__", repr(fmt))


def to_conversation(fmt, record, mapping=None):
    """Map a record with the named (or given) format and check the result.

    `mapping` (a FieldMapping) first renames the record's fields and roles to the
    format's. Returns a checked conversation (list of messages) or a non-empty document
    (str). A missing field's error says which format was assumed and which keys the
    record has.
    """
    if not isinstance(record, dict):
        raise RecordError(f"record must be a JSON object, got {type(record).__name__}")
    mapping = mapping or FieldMapping(fmt)
    try:
        result = get_format(fmt)(mapping.apply(record))
    except RecordError as e:
        e = mapping.record_error(e)
        if e.reason.startswith("missing field"):
            keys = ", ".join(repr(k) for k in record) or "none"
            raise RecordError(f"{e.reason} (read as format '{format_name(fmt)}'; the record's "
                              f"keys: {keys}; map other names with the dataset's 'columns')",
                              field=e.field) from None
        raise e from None
    if isinstance(result, str):
        if not result.strip():
            raise RecordError("document text is empty")
        return result
    check_conversation(result)
    return result
