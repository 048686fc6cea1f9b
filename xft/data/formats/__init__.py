"""Format map functions: one raw dataset record → a conversation or a document.

A map function takes the record (a dict) and returns either a list of messages
(a conversation, see xft.data.conversation) or a str (a document for
pretraining, see xft.data.encode.encode_documents). It raises RecordError
naming the field when the record is unusable; the pipeline adds the file and
record index. A config names a function of FORMATS, or passes its own callable
(`datasets=[dict(path=..., format=my_fn)]` with `def my_fn(record): ...` in the
config file). A named format reads records with other field and role names through a
declarative mapping (`columns` / `tags`, see xft.data.formats.mapping).
"""

import difflib

from xft.data.conversation import check_conversation
from xft.data.formats.chat import alpaca, alpaca_zh, guanaco, openai, qa, sharegpt
from xft.data.formats.mapping import FieldMapping
from xft.data.formats.moss import moss
from xft.data.formats.pretrain import pretrain
from xft.data.formats.xtuner import xtuner, xtuner_pretrain
from xft.errors import ConfigError, RecordError

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
}


def get_format(fmt):
    """The map function for a format name, or `fmt` itself when it is a callable."""
    if callable(fmt):
        return fmt
    if fmt not in FORMATS:
        close = difflib.get_close_matches(str(fmt), list(FORMATS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown dataset format '{fmt}'{hint} (known: "
                          f"{', '.join(sorted(FORMATS))}, or a function record → messages)")
    return FORMATS[fmt]


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
