"""Reading a JSON Lines input file of a tool (prompt files, `xft template render` input)."""

import json
from pathlib import Path

from xft.errors import DataError


def json_lines(path):
    """(where, record) for each non-blank line of `path`, where is 'PATH line N'.

    A missing file or a line that is not JSON is a DataError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=path)
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON: {e.msg}", file=where) from None
