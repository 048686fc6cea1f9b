"""Paths in configs: `xft://NAME` names a file or folder shipped in xft/assets.

That lets shipped configs point at the embedded tiny model and demo data in a
way that works from any directory and from a non-editable install.
"""

import re
from pathlib import Path

ASSET_SCHEME = "xft://"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def resolve_path(path: str) -> str:
    """Absolute path for `xft://...`; anything else (local path, hub id) unchanged."""
    if isinstance(path, str) and path.startswith(ASSET_SCHEME):
        return str(ASSETS_DIR / path[len(ASSET_SCHEME):])
    return path


def portable_name(path):
    """`xft://NAME` for a path inside the installed package's assets (what resolve_path
    made of it), so an artifact never names this installation's folder; anything else
    unchanged."""
    if isinstance(path, str) and Path(path).is_absolute():
        resolved = Path(path).resolve()
        if resolved.is_relative_to(ASSETS_DIR):
            return ASSET_SCHEME + resolved.relative_to(ASSETS_DIR).as_posix()
    return path


# A hub id: "name" or "owner/name" of letters, digits, '-', '_', '.' (not at the ends).
_HUB_ID = re.compile(r"^[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?(?:/[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?)?$")
DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt", ".arrow")
# A Hugging Face model / tokenizer directory holds at least one of these.
MODEL_FILES = ("config.json", "adapter_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def is_hub_id(path: str) -> bool:
    """True when `path` cannot be a local path that is missing but could be a hub id.

    Anything else (absolute, ./ or ../ relative, ~, backslashes, a data file suffix,
    xft://) is a local path, and a missing one must say "not found" rather than reach
    the hub resolver, whose message would be about repo id syntax or the network.
    """
    return (not path.startswith(ASSET_SCHEME) and not path.lower().endswith(DATA_SUFFIXES)
            and _HUB_ID.match(path) is not None)


def check_local(path, what, key=None, need=()):
    """Raise ConfigError when `path` is a local path that does not exist.

    `what` says what the path should hold ("model directory"); `key` names the
    config key or option. A hub id that is not a local path passes unchecked. For
    an existing directory, `need` lists files of which at least one must be in it.
    """
    from xft.errors import ConfigError

    label = f"'{key}': " if key else ""
    local = Path(resolve_path(path)).expanduser()
    if not local.exists():
        if is_hub_id(path):
            return
        shown = f"{path} ({local.resolve()})" if str(local.resolve()) != path else path
        raise ConfigError(f"{label}{what} not found: {shown}")
    if need and local.is_dir() and not any((local / name).exists() for name in need):
        raise ConfigError(f"{label}{path} is not a {what}: it holds none of {', '.join(need)}")


def check_local_data(path, key=None):
    """check_local for a dataset: a local directory must hold a data file somewhere."""
    from xft.errors import ConfigError

    check_local(path, "dataset file or directory", key)
    local = Path(resolve_path(path)).expanduser()
    if local.is_dir() and not any(p.suffix.lower() in DATA_SUFFIXES for p in local.rglob("*")):
        label = f"'{key}': " if key else ""
        raise ConfigError(f"{label}dataset directory {path} holds no data file "
                          f"({', '.join(DATA_SUFFIXES)})")
