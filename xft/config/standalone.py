"""One loadable Python file for a resolved config, comments and functions kept.

MMEngine's `Config.dump` resolves `_base_` inheritance but drops every comment and
cannot write a function (a custom format map fn). xft writes the file itself: the
resolved values as Python literals, each key preceded by the comments that stood
above (or beside) its assignments in the config's source files, and before them the
imports, functions and `_helper` assignments of those files, copied as source, so a
map function and whatever it uses come along. `xft copy-cfg` and the config a run
writes into its work dir (and `hf/`) are this file.
"""

import ast
import io
import tokenize
from pathlib import Path

from xft.errors import ConfigError

BASE_KEY = "_base_"


def standalone_text(cfg, header=None, overrides=None):
    """The text of a standalone config equal to `cfg` (an MMEngine Config loaded from a
    file). `overrides`: top-level keys to set besides (e.g. the run's work_dir)."""
    values = dict(cfg.to_dict(), **(overrides or {}))
    values = {k: v for k, v in values.items() if not k.startswith("_")}  # helpers: below
    sources = _sources(Path(cfg.filename))
    lines = [f"# {line}" for line in (header or "").splitlines()]
    lines += sources.header
    if sources.imports:
        lines += [""] + sources.imports
    for helper in sources.helpers:
        lines += ["", helper]
    functions = dict(sources.functions)
    for key, value in values.items():
        lines.append("")
        lines += sources.comments.get(key, [])
        lines.append(f"{key} = {_render_top(value, functions, key)}")
    return "\n".join(lines).lstrip("\n") + "\n"


class _Sources:
    def __init__(self):
        self.header, self.imports, self.helpers = [], [], []
        self.comments = {}  # top-level key → comment lines, base files first
        self.functions = {}  # (file, first line) → source of a lambda found there
        self.seen = set()


def _sources(leaf):
    sources = _Sources()
    for path in _inheritance_order(leaf):
        if path.suffix == ".py":
            _read_python(path, sources)
    return sources


def _inheritance_order(path, seen=None):
    """The config file's `_base_` files (depth first) and then the file itself."""
    seen = set() if seen is None else seen
    order = []
    for base in _base_files(path):
        if base not in seen:
            seen.add(base)
            order += _inheritance_order(base, seen)
    return order + [path]


def _base_files(path):
    if path.suffix != ".py":  # YAML or JSON
        from mmengine.fileio import load

        bases = (load(str(path)) or {}).get(BASE_KEY, [])
    else:
        bases = []
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and _target_names(node) == [BASE_KEY]:
                bases = ast.literal_eval(node.value)
    if isinstance(bases, str):
        bases = [bases]
    return [(path.parent / base).resolve() for base in bases]


def _read_python(path, sources):
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    lines = text.splitlines()
    comments = _comment_lines(text)
    taken = set()  # comment lines already attached to a statement
    previous_end = 0
    for node in tree.body:
        above = [n for n in range(previous_end + 1, node.lineno) if n in comments]
        # Only the block touching the statement belongs to it; earlier comments of the
        # file's head go with the first statement too.
        block = [comments[n] for n in above]
        beside = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
        taken.update(above)
        previous_end = node.end_lineno
        source = "\n".join(lines[node.lineno - 1:node.end_lineno])
        names = _target_names(node) if isinstance(node, ast.Assign) else []
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            _add_once(sources.imports, source, sources.seen)
        elif names == [BASE_KEY]:  # a file's own description: the copy's head
            sources.header += block
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) or (
                names and all(name.startswith("_") for name in names)):
            _add_once(sources.helpers, "\n".join(block + [source]), sources.seen)
        elif names:
            for name in names:
                kept = sources.comments.setdefault(name, [])
                kept += [line for line in block + beside if line not in kept]
        for lam in ast.walk(node):
            if isinstance(lam, ast.Lambda):
                sources.functions[(str(path), lam.lineno)] = ast.get_source_segment(text, lam)


def _add_once(block, source, seen):
    if source not in seen:
        seen.add(source)
        block.append(source)


def _target_names(node):
    return [t.id for t in node.targets if isinstance(t, ast.Name)]


def _comment_lines(text):
    """Line number → the comment on it ('# ...'), for every comment of the file."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string
    return found


def _render_top(value, functions, key):
    """A top-level value: a dict as dict(...) with a line per key, a list a line per item."""
    if isinstance(value, dict) and value and all(str(k).isidentifier() for k in value):
        items = [f"    {k}={_render(v, functions, f'{key}.{k}')}," for k, v in value.items()]
        return "dict(\n" + "\n".join(items) + "\n)"
    if isinstance(value, list) and value:
        items = [f"    {_render(v, functions, f'{key}[{i}]')}," for i, v in enumerate(value)]
        return "[\n" + "\n".join(items) + "\n]"
    return _render(value, functions, key)


def _render(value, functions, path):
    """`value` as Python source; a function as its name (its def is copied above), or a
    lambda as its own source."""
    if callable(value):
        name = getattr(value, "__name__", "")
        if name.isidentifier():
            return name
        code = getattr(value, "__code__", None)
        key = (code.co_filename, code.co_firstlineno) if code else None
        if key in functions:
            return functions[key]
        raise ConfigError(f"cannot write '{path}' ({value!r}) into a standalone config: "
                          "define it with `def` in the config file")
    if isinstance(value, dict):
        items = ", ".join(f"{k!r}: {_render(v, functions, f'{path}.{k}')}"
                          for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, (list, tuple)):
        items = [_render(v, functions, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    if isinstance(value, (str, int, float, bool, type(None))):
        return repr(value)
    raise ConfigError(f"cannot write '{path}' ({type(value).__name__}) into a standalone config")
