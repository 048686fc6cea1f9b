"""Datasets by name: registry files that declare path, format and field mapping once.

A config lists `dict(name='my_sft')` (plus any key to override) instead of a full entry,
and names its registry files in `data.registry`; xft's own registry
(`xft://data/dataset_info.json`, the shipped data) is consulted last. A registry is a
JSON or YAML file mapping names to entries, written with xft's dataset keys

    {"my_sft": {"path": "sft.jsonl", "format": "openai",
                "columns": {"messages": "conversations"}}}

or with LLaMA-Factory's `dataset_info.json` keys, so such a file is used as it is:

    {"my_sft": {"file_name": "sft.json", "formatting": "sharegpt",
                "columns": {"messages": "conversations"},
                "tags": {"role_tag": "role", "content_tag": "content",
                         "user_tag": "user", "assistant_tag": "assistant"}}}

Relative file paths are relative to the registry file's folder.
"""

import difflib
import json
from pathlib import Path

from xft.errors import ConfigError
from xft.paths import resolve_path

SHIPPED_REGISTRY = "xft://data/dataset_info.json"

# LLaMA-Factory's names → xft's (xft.data.formats.mapping).
LF_ALPACA_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output",
                     "system": "system", "history": "history"}
LF_SHAREGPT_COLUMNS = {"messages": "messages", "system": "system", "tools": "tools"}
LF_TAGS = {"role_tag": "role", "content_tag": "content"}  # these two are columns in xft
LF_ROLE_TAGS = {"user_tag": "user", "assistant_tag": "assistant", "system_tag": "system",
                "observation_tag": "tool", "function_tag": "function_call"}
LF_KEYS = {"file_name", "hf_hub_url", "formatting", "num_samples", "columns", "tags",
           "ranking", "split", "subset", "folder", "load_from", "script_url", "ms_hub_url",
           "om_hub_url"}


def read_registry(path):
    """{name: xft dataset entry} of one registry file."""
    resolved = Path(resolve_path(path))
    if not resolved.is_file():
        raise ConfigError(f"dataset registry '{path}' not found")
    text = resolved.read_text(encoding="utf-8")
    try:
        if resolved.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # json.JSONDecodeError or yaml.YAMLError
        raise ConfigError(f"dataset registry '{path}' cannot be parsed: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"dataset registry '{path}' must map names to entries, got "
                          f"{type(data).__name__}")
    entries = {}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"dataset registry '{path}', entry '{name}': must be a dict")
        entries[name] = _xft_entry(entry, resolved.parent, f"{path}, entry '{name}'")
    return entries


def _xft_entry(entry, folder, where):
    """An entry in xft's keys; LLaMA-Factory entries translated, paths made absolute."""
    entry = dict(entry)
    if set(entry) & {"file_name", "hf_hub_url", "formatting"}:
        entry = _from_llama_factory(entry, where)
    path = entry.get("path")
    if not isinstance(path, str):
        raise ConfigError(f"{where}: needs 'path' (or LLaMA-Factory's 'file_name')")
    if not path.startswith("xft://") and (folder / path).exists():
        entry["path"] = str(folder / path)
    return entry


def _from_llama_factory(entry, where):
    unknown = set(entry) - LF_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown LLaMA-Factory key(s) {sorted(unknown)}")
    if entry.get("ranking"):
        raise ConfigError(f"{where}: preference ('ranking') datasets are not supported yet")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        raise ConfigError(f"{where}: formatting '{formatting}' is not supported (alpaca, "
                          "sharegpt)")
    out = {"path": entry.get("file_name") or entry.get("hf_hub_url"), "format": formatting}
    names = LF_ALPACA_COLUMNS if formatting == "alpaca" else LF_SHAREGPT_COLUMNS
    columns, tags = {}, {}
    for key, value in (entry.get("columns") or {}).items():
        if key in names:
            columns[names[key]] = value
        elif key not in ("images", "videos", "audios"):  # multimodal: xft trains text only
            raise ConfigError(f"{where}: column '{key}' is not supported")
    for key, value in (entry.get("tags") or {}).items():
        if key in LF_TAGS:
            columns[LF_TAGS[key]] = value
        elif key in LF_ROLE_TAGS:
            tags[LF_ROLE_TAGS[key]] = value
        else:
            raise ConfigError(f"{where}: tag '{key}' is not supported")
    if columns:
        out["columns"] = columns
    if tags:
        out["tags"] = tags
    if entry.get("num_samples") is not None:
        out["max_samples"] = entry["num_samples"]
    return out


def resolve_names(datasets, registries, key):
    """The config's dataset list with every `dict(name=...)` entry replaced by its registry
    entry (keys given beside the name override it)."""
    if not isinstance(datasets, list) or not any(isinstance(d, dict) and "name" in d
                                                 for d in datasets):
        return datasets
    known = known_datasets(registries)
    out = []
    for i, entry in enumerate(datasets):
        if not (isinstance(entry, dict) and "name" in entry):
            out.append(entry)
            continue
        named = registry_entry(entry["name"], registries, f"'{key}[{i}].name'", known)
        out.append({**named, **{k: v for k, v in entry.items() if k != "name"}})
    return out


def known_datasets(registries):
    """{name: entry} of the registry files, then xft's own (the given files win)."""
    known = {}
    for path in [SHIPPED_REGISTRY, *reversed(registries or [])]:
        known.update(read_registry(path))
    return known


def registry_entry(name, registries, where, known=None):
    """The entry registered as `name`, or ConfigError (`where` names the setting)."""
    known = known_datasets(registries) if known is None else known
    if name not in known:
        close = difflib.get_close_matches(str(name), list(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{where}: no dataset '{name}' in the registries "
                          f"({', '.join([*(registries or []), SHIPPED_REGISTRY])}){hint}")
    return known[name]
