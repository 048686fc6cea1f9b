"""Find shipped configs, load a config file with `_base_` inheritance, validate it.

Configs are MMEngine `Config` Python files. In a source checkout they live in the
top-level `configs/` folder; an installed wheel carries them as `xft/configs/`.
"""

import difflib
from pathlib import Path

from xft.config.schema import Experiment, check_paths, validate
from xft.errors import ConfigError

BASE_DIR_NAME = "_base_"
# What MMEngine's Config.fromfile reads (shipped configs are all Python files).
CONFIG_SUFFIXES = (".py", ".json", ".yaml", ".yml")


def configs_root() -> Path:
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "configs", package_dir.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"shipped configs not found next to {package_dir}; reinstall xft")


def _shipped_config_files():
    root = configs_root()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if BASE_DIR_NAME in relative.parts or path.name.startswith("_"):
            continue
        yield path


def list_configs(pattern=None):
    """Sorted names of runnable shipped configs, optionally filtered by a substring."""
    names = {path.stem for path in _shipped_config_files()}
    if pattern:
        names = {n for n in names if pattern.lower() in n.lower()}
    return sorted(names)


def find_config(name_or_path) -> Path:
    """A config file path from a path on disk or the name of a shipped config."""
    path = Path(name_or_path)
    if path.is_file():
        if path.suffix not in CONFIG_SUFFIXES:
            raise ConfigError(f"{name_or_path} is not a config file: xft reads "
                              f"{', '.join(CONFIG_SUFFIXES)} configs")
        return path.resolve()
    if path.suffix in CONFIG_SUFFIXES or path.parent != Path("."):
        raise ConfigError(f"config file not found: {name_or_path}")
    matches = [p for p in _shipped_config_files() if p.stem == name_or_path]
    if len(matches) > 1:
        raise ConfigError(f"config name '{name_or_path}' is ambiguous: {[str(m) for m in matches]}")
    if matches:
        return matches[0]
    close = difflib.get_close_matches(str(name_or_path), list_configs(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `xft list-cfg`"
    raise ConfigError(f"no config file or shipped config named '{name_or_path}'{hint}")


def load_raw_config(name_or_path, cfg_options=None):
    """The MMEngine Config (inheritance resolved, options merged), not yet validated."""
    from mmengine.config import Config

    path = find_config(name_or_path)
    try:
        cfg = Config.fromfile(str(path))
    except Exception as e:  # syntax errors, missing _base_ files, ...
        raise ConfigError(f"cannot load config {path}: {e}") from e
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def load_config(name_or_path, cfg_options=None, data_paths=True):
    """Return (mmengine Config, validated Experiment) for a config name or file.

    Local paths are checked too: the model's and tokenizer's, and with `data_paths`
    the datasets'."""
    cfg = load_raw_config(name_or_path, cfg_options)
    try:
        experiment = validate(cfg.to_dict())
        check_paths(experiment, data=data_paths)
    except ConfigError as e:
        raise ConfigError(f"{cfg.filename}: {e}") from None
    return cfg, experiment


def copy_config(name_or_path, dest_dir) -> Path:
    """Write a standalone copy of a config (inheritance resolved, comments, functions and
    helpers kept: xft.config.standalone) into dest_dir."""
    from xft.config.standalone import standalone_text

    cfg = load_raw_config(name_or_path)
    source = Path(cfg.filename)
    text = standalone_text(cfg)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{source.stem}_copy.py"
    if dest.exists():
        raise ConfigError(f"{dest} already exists; remove it or choose another directory")
    dest.write_text(text, encoding="utf-8")
    return dest


def config_text(cfg, work_dir=None):
    """The resolved config as one loadable file (xft.config.standalone), saved in the run's
    work dir and beside the exported artifact; `work_dir` is written into it, so
    `xft train <work_dir>/xft_config.py --resume` continues the run from its own folder."""
    from xft.config.standalone import standalone_text

    overrides = {"work_dir": str(Path(work_dir).resolve())} if work_dir is not None else None
    return standalone_text(cfg, overrides=overrides, header=(
        f"Written by xft from {cfg.filename} ({BASE_DIR_NAME} files resolved, options applied)"))
