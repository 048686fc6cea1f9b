"""The records behind a run's held-out validation samples: `work_dir/heldout.jsonl`.

Training holds out samples (xft.data.split); this traces them back to the records
they came from (xft.data.pipeline.SourceReport.sample_records) and writes each
record as it is in its file, wrapped with where it came from and how training read it:

    {"source": "data/train.json", "index": 17, "format": "alpaca",
     "record": {"instruction": "...", "input": "", "output": "..."}}

plus "columns", "tags", "placeholders" and "system" when the dataset or config set
them. A map function defined in a config is written as "CONFIG.py:NAME", which
xft.data.formats.get_format loads again. The `heldout` format reads such a file back
(each line through its own format and mapping), so `xft eval --data` and `--prompts`
take it as it is. A pretraining document split into pieces is listed once when any of
its pieces is held out.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from xft.errors import ConfigError, RecordError

HELDOUT_FILE = "heldout.jsonl"
WRAPPER_KEYS = {"source", "index", "format", "record"}  # every line has these
OPTIONAL_KEYS = ("columns", "tags", "placeholders", "system")


@dataclass
class HeldOutSource:
    """The held-out records of one training dataset."""

    dataset: object  # the config's DatasetCfg
    records: list  # ascending record indices in the file (after max_samples)


def held_out_sources(datasets, reports, parts):
    """[HeldOutSource] of the datasets that hold out samples, or None when an objective
    did not say which record each sample came from."""
    sources = []
    for ds_cfg, report, part in zip(datasets, reports, parts):
        if not part.held_out:
            continue
        if report.sample_records is None:
            return None
        sources.append(HeldOutSource(ds_cfg, sorted({report.sample_records[i]
                                                      for i in part.indices})))
    return sources


def format_label(fmt, config_file=None):
    """A dataset's format as written in heldout.jsonl: its name, or CONFIG.py:NAME for a
    map function defined in the config."""
    if isinstance(fmt, str):
        return fmt
    name = getattr(fmt, "__name__", None)
    if config_file is None or not name or name == "<lambda>":
        raise ValueError(f"cannot name the map function {fmt!r} for heldout.jsonl")
    return f"{Path(config_file).resolve()}:{name}"


def heldout_lines(sources, system=None, config_file=None):
    """The heldout.jsonl lines (dicts) of [HeldOutSource], records read again from their
    files."""
    from xft.data.pipeline import read_records

    for source in sources:
        ds_cfg = source.dataset
        records = read_records(ds_cfg.path)
        if ds_cfg.max_samples is not None:
            records = records[:ds_cfg.max_samples]
        common = {"format": format_label(ds_cfg.format, config_file)}
        for key, value in [("columns", ds_cfg.columns), ("tags", ds_cfg.tags),
                           ("placeholders", ds_cfg.placeholders), ("system", system)]:
            if value:
                common[key] = value
        for index in source.records:
            yield {"source": ds_cfg.path, "index": index, **common, "record": records[index]}


def write_heldout(path, sources, system=None, config_file=None):
    """Write heldout.jsonl (through a temporary file: never half written); returns the
    number of records written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for line in heldout_lines(sources, system, config_file):
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def is_heldout_file(path):
    """Whether a file's first record is a heldout.jsonl line."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return False
    with open(path, encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return False
                return isinstance(first, dict) and WRAPPER_KEYS <= set(first)
    return False


def check_heldout_file(path):
    """ConfigError for a format or mapping that a heldout.jsonl line names and xft cannot
    read (e.g. a config file that is gone), before any model loads."""
    from xft.data.formats import FieldMapping, get_format
    from xft.data.pipeline import read_records

    seen = set()
    for index, line in enumerate(read_records(str(path))):
        if not isinstance(line, dict):
            continue  # the map step names the record
        key = json.dumps([line.get(k) for k in ("format", "columns", "tags")], sort_keys=True)
        if key not in seen and isinstance(line.get("format"), str):
            seen.add(key)
            try:
                get_format(line["format"])
                FieldMapping(line["format"], line.get("columns"), line.get("tags"))
            except ConfigError as e:
                raise ConfigError(f"{path}, record {index}: {e}") from None


def heldout(line):
    """Format map function of a heldout.jsonl line: its record read as training read it
    (format, columns/tags, placeholders, then the run's system prompt).

    Example: {"source": "qa.json", "index": 3, "format": "qa", "system": "Be brief.",
    "record": {"question": "2+2?", "answer": "4"}} → system 'Be brief.', user '2+2?',
    assistant '4'.
    """
    from xft.data.conversation import with_system
    from xft.data.formats import FieldMapping, to_conversation
    from xft.data.pipeline import fill_placeholders

    missing = sorted(WRAPPER_KEYS - set(line))
    if missing:
        raise RecordError("missing field (a heldout.jsonl line has source, index, format "
                          "and record)", field=missing[0])
    record = fill_placeholders(line["record"], line.get("placeholders") or {})
    mapping = FieldMapping(line["format"], line.get("columns") or {}, line.get("tags") or {})
    try:
        mapped = to_conversation(line["format"], record, mapping)
    except RecordError as e:
        raise RecordError(e.reason, field=f"record.{e.field}" if e.field else "record") from None
    return mapped if isinstance(mapped, str) else with_system(mapped, line.get("system"))
