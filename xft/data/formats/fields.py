"""Reading fields of a raw record, with errors that name the field and spot typos."""

import difflib

from xft.errors import RecordError


def missing_field(record, name, where=None):
    """A RecordError for a missing field, suggesting a present key that looks misspelled."""
    close = difflib.get_close_matches(name, [k for k in record if isinstance(k, str)], n=1,
                                      cutoff=0.6)
    hint = f"; did you mean '{name}' (the record has '{close[0]}')?" if close else ""
    return RecordError(f"missing field{hint}", field=where or name)


def text(record, name, required=True, where=None, allow_empty=False):
    """The string value of record[name]; '' when optional and absent (or null)."""
    where = where or name
    if name not in record and required:
        raise missing_field(record, name, where)
    value = record.get(name)
    if value is None:
        if required:
            raise RecordError("must be a string, got null", field=where)
        return ""
    if not isinstance(value, str):
        raise RecordError(f"must be a string, got {type(value).__name__}", field=where)
    if required and not allow_empty and not value.strip():
        raise RecordError("is empty", field=where)
    return value


def items(record, name, where=None):
    """The list value of record[name] (required)."""
    where = where or name
    if name not in record:
        raise missing_field(record, name, where)
    value = record[name]
    if not isinstance(value, list):
        raise RecordError(f"must be a list, got {type(value).__name__}", field=where)
    return value


def obj(value, where):
    if not isinstance(value, dict):
        raise RecordError(f"must be an object, got {type(value).__name__}", field=where)
    return value
