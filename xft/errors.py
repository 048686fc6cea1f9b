"""Errors that the CLI reports as one line (no traceback unless --debug)."""

import contextlib


class XftError(Exception):
    """A problem the user can fix: bad config, bad data, missing file."""


class ConfigError(XftError):
    """The experiment config is invalid (unknown key, wrong type, missing value)."""


class DataError(XftError):
    """A dataset file or record is invalid.

    The message names the file, the record index and the field, so the user can
    go straight to the offending line.
    """

    def __init__(self, reason, file=None, index=None, field=None):
        self.reason, self.file, self.index, self.field = reason, file, index, field
        where = []
        if file is not None:
            where.append(str(file))
        if index is not None:
            where.append(f"record {index}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)


class RecordError(ValueError):
    """Raised by a format map function for one bad record.

    The data pipeline catches it and re-raises it as a DataError that also names
    the file and record index (which the map function does not know).
    """

    def __init__(self, reason, field=None):
        self.reason, self.field = reason, field
        super().__init__(f"field '{field}': {reason}" if field else reason)


def did_you_mean(value, choices):
    """"; did you mean 'X'?" for the choice closest to a misspelled value, or ""."""
    import difflib

    close = difflib.get_close_matches(str(value), list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


class StageError(XftError):
    """An unexpected exception inside one of xft's stages, with what xft was doing.

    The original exception is kept as `__cause__`, so `--debug` shows its traceback.
    """


@contextlib.contextmanager
def doing(what):
    """Name the stage in any unexpected exception raised inside it.

    `with doing("loading the tokenizer from X"): ...` turns a library's exception
    into a StageError "while loading the tokenizer from X: ValueError: ...". xft's own
    errors pass unchanged: they already say what is wrong.
    """
    try:
        yield
    except XftError:
        raise
    except Exception as e:
        raise StageError(f"while {what}: {type(e).__name__}: {e}") from e
