"""Build the training dataset from the config's dataset list, for any objective.

Per source file (cached, see xft.data.cache): load records (JSON/JSONL read
here for precise errors; other types through `datasets.load_dataset`) → fill
placeholders → format map fn → the objective's `prepare` (for SFT: the
conversation rendered by the bound template, or a pretraining document) → the
objective's `encode` (tokenizer; over-long samples dropped or truncated per the
dataset's policy). Then all sources are split for validation (xft.data.split),
mixed by ratio (xft.data.mix) and optionally packed (the objective's `pack`).
The result is a torch Dataset of samples holding the objective's fields (SFT:
input_ids, labels; + position_ids when packed) and a DataReport that counts
every record and sample that was dropped, truncated, repeated or packed.

This layer takes the config sections it needs (data, datasets) and the built
tokenizer, template and objective; it never sees the whole experiment.
"""

import dataclasses
import inspect
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from torch.utils.data import Dataset

from xft.data import cache, questionable
from xft.data.encode import EncodeStats
from xft.data.formats import FieldMapping, format_name, to_conversation
from xft.data.heldout import held_out_sources
from xft.data.mix import check_ratios, mix
from xft.errors import DataError, RecordError, doing
from xft.paths import resolve_path

SKIP_REASON_SAMPLES = 5


class EncodedDataset(Dataset):
    """Encoded samples: each item a dict of the objective's fields (SFT: input_ids,
    labels), plus 'position_ids' when the samples are packed rows."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]


@dataclass
class SourceReport:
    """What happened to one dataset file: nothing is dropped without being counted here."""

    path: str
    records: int = 0
    skipped_bad: int = 0
    skip_reasons: list = field(default_factory=list)
    questionable: dict = field(default_factory=dict)  # xft.data.questionable.apply_policy
    stats: EncodeStats = field(default_factory=EncodeStats)
    truncation: str = "drop"  # the policy applied to over-long samples
    cache: str = "off"  # 'hit' (loaded), 'built' (encoded and stored), 'off' or 'uncacheable'
    cache_entry: str = ""
    # Per sample, the index of the file's record it came from (None: the objective's
    # encode did not say; then held-out records cannot be named).
    sample_records: Optional[list] = None

    def lines(self):
        s = self.stats
        yield (f"{self.path}: {self.records} records → {s.samples} samples "
               f"({s.label_tokens} trained tokens of {s.tokens})")
        if self.cache in ("hit", "built"):
            verb = "loaded from" if self.cache == "hit" else "stored in"
            yield f"  cache {self.cache}: {verb} {self.cache_entry}"
        if self.skipped_bad:
            yield f"  bad records skipped: {self.skipped_bad}"
            # The reasons belong under their own heading, not under the next counter.
            for reason, count in Counter(self.skip_reasons).most_common(SKIP_REASON_SAMPLES):
                yield f"    {count} × {reason}"
        for label, count in [("samples longer than max_length dropped", s.dropped_too_long),
                             ("samples truncated to max_length", s.truncated),
                             ("samples with no trained token dropped", s.dropped_no_label),
                             ("documents split into max_length pieces", s.split_documents)]:
            if count:
                yield f"  {label}: {count}"
        yield from questionable.report_lines(self.questionable)


def read_records(path):
    """Records of a dataset file as a list of dicts, with errors naming file and record."""
    resolved = Path(resolve_path(path))
    suffix = resolved.suffix.lower()
    if suffix in (".json", ".jsonl"):
        if not resolved.is_file():
            raise DataError("file not found", file=path)
        try:
            text = resolved.read_text(encoding="utf-8-sig")  # tolerate a UTF-8 BOM
        except UnicodeDecodeError as e:
            raise DataError(f"not valid UTF-8 ({e.reason} at byte {e.start})", file=path) from None
        if not text.strip():
            raise DataError("file is empty", file=path)
        records = _parse_json_text(text, path, jsonl=(suffix == ".jsonl"))
    else:
        records = _load_with_datasets(str(resolved), path)
    if not records:
        raise DataError("file has no records", file=path)
    return records


def _parse_json_text(text, path, jsonl):
    if not jsonl:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            # A .json file may really be JSON Lines; try that before giving up.
            if e.msg != "Extra data":
                raise DataError(f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}",
                                file=path) from None
            return _parse_json_text(text, path, jsonl=True)
        if not isinstance(data, list):
            raise DataError(f"top level must be a list of records, got {type(data).__name__}",
                            file=path)
        return data
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON on line {lineno}: {e.msg}", file=path,
                            index=len(records)) from None
    return records


def _load_with_datasets(resolved, path):
    import datasets

    builder = {".csv": "csv", ".parquet": "parquet", ".txt": "text"}.get(Path(resolved).suffix.lower())
    options = {}
    if builder == "csv":
        # Every cell as the text it is: type guessing would turn a text column of numbers
        # into ints (refused as text) or "3.50" into 3.5.
        options["features"] = datasets.Features(
            {name: datasets.Value("string") for name in _csv_header(resolved, path)})
    try:
        if builder:
            ds = datasets.load_dataset(builder, data_files=resolved, split="train", **options)
        else:
            ds = datasets.load_dataset(resolved, split="train")
    except Exception as e:
        raise DataError(f"cannot load dataset: {e}", file=path) from None
    return ds.to_list()


def _csv_header(resolved, path):
    import csv

    try:
        with open(resolved, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 ({e.reason} at byte {e.start})", file=path) from None
    if not header:
        raise DataError("file is empty (a CSV file needs a header row)", file=path)
    if len(set(header)) != len(header):
        raise DataError(f"header row repeats a column name: {header}", file=path)
    return header


def fill_placeholders(value, placeholders):
    """Replace {{key}} in every string of a record (nested lists and dicts too)."""
    if not placeholders:
        return value
    if isinstance(value, str):
        for key, replacement in placeholders.items():
            value = value.replace("{{" + key + "}}", replacement)
        return value
    if isinstance(value, list):
        return [fill_placeholders(v, placeholders) for v in value]
    if isinstance(value, dict):
        return {k: fill_placeholders(v, placeholders) for k, v in value.items()}
    return value


def map_records(records, ds_cfg, data_cfg, prepare, report, map_record=to_conversation):
    """Records → (prepared items, the index of each one's record), through the dataset's
    format map fn and `prepare` (mapped conversation or document → item; training: the
    objective's). `map_record(format, record, mapping)` maps and checks one record
    (training: the objective's, e.g. a preference pair's).

    A bad record raises DataError naming file, record index and field, or (with
    data.on_bad_record='skip') is counted in `report` with its reason.
    """
    prepared, kept = [], []
    mapping = FieldMapping(ds_cfg.format, ds_cfg.columns, ds_cfg.tags)
    for index, record in enumerate(records):
        try:
            record = fill_placeholders(record, ds_cfg.placeholders)
            findings = questionable.check_strings(record)
            mapped = map_record(ds_cfg.format, record, mapping)
            if isinstance(mapped, list):  # a conversation (SFT)
                findings += questionable.check_turns(mapped)
            item = prepare(mapped)
        except RecordError as e:
            if data_cfg.on_bad_record == "error":
                raise DataError(e.reason, file=ds_cfg.path, index=index, field=e.field) from None
            report.skipped_bad += 1
            report.skip_reasons.append(str(e))
            continue
        except Exception as e:
            if isinstance(ds_cfg.format, str):
                raise  # a bug in xft's own map function: keep the traceback
            # The user's function crashed: say on which record (never skipped; likely a bug).
            raise DataError(f"format function {format_name(ds_cfg.format)} raised "
                            f"{type(e).__name__}: {e}", file=ds_cfg.path, index=index) from e
        questionable.apply_policy(findings, index, report.questionable,
                                  data_cfg.on_questionable, ds_cfg.path)
        prepared.append(item)
        kept.append(index)
    return prepared, kept


@dataclass
class SourceBuild:
    """What encoding one dataset file depends on besides the file itself."""

    data: object  # the config's DataCfg
    tokenizer: object
    template: object  # bound (xft.data.templates.BoundTemplate)
    objective: object  # xft.objectives.Objective
    system: Optional[str] = None  # system prompt for records without one


def _encoded_source(ds_cfg, build, truncation):
    """Read, convert and encode one dataset file: (samples, SourceReport)."""
    records = read_records(ds_cfg.path)
    if ds_cfg.max_samples is not None:
        records = records[:ds_cfg.max_samples]
    report = SourceReport(path=ds_cfg.path, records=len(records), truncation=truncation)
    objective = build.objective
    prepared, kept = map_records(
        records, ds_cfg, build.data,
        lambda mapped: objective.prepare(mapped, build.template, build.system), report,
        objective.map_record)
    samples, report.stats = objective.encode(prepared, build.tokenizer,
                                             build.data.max_length, truncation)
    if len(report.stats.origins) == len(samples):
        report.sample_records = [kept[i] for i in report.stats.origins]
    report.stats.origins = []  # kept as sample_records, the file's record indices
    return samples, report


def source_cache_key(ds_cfg, build, truncation):
    """(key, key parts) of a dataset's cache entry, or None when it cannot be keyed:
    a path that is not a local file, or a map function whose source is unreadable."""
    content = cache.file_fingerprint(resolve_path(ds_cfg.path))
    if content is None or ds_cfg.format == "heldout":
        return None  # heldout.jsonl lines name other formats, whose code the key cannot see
    try:
        map_fn = cache.code_fingerprint(build.objective.map_function(ds_cfg.format))
        objective_code = cache.code_fingerprint(inspect.getmodule(type(build.objective)))
    except (OSError, TypeError):
        return None
    parts = {
        "version": cache.CACHE_VERSION,
        "file": content,
        "reader": reader_key(ds_cfg.path),
        "format": format_name(ds_cfg.format),
        "mapping": FieldMapping(ds_cfg.format, ds_cfg.columns, ds_cfg.tags).key(),
        "map_fn": map_fn,
        "code": cache.code_fingerprint(*cache.ENCODING_MODULES),
        "objective": [build.objective.name, repr(build.objective.options), objective_code],
        "placeholders": ds_cfg.placeholders,
        "max_samples": ds_cfg.max_samples,
        "system": build.system,
        "template": repr(build.template),
        "tokenizer": cache.tokenizer_fingerprint(build.tokenizer),
        "max_length": build.data.max_length,
        "truncation": truncation,
        "on_bad_record": build.data.on_bad_record,
        "on_questionable": build.data.on_questionable,
    }
    return cache.cache_key(parts), parts


def reader_key(path):
    """What decides how `read_records` parses the file besides its bytes: the suffix picks
    the reader (a .json list, JSON Lines, or a `datasets` builder, whose version counts)."""
    suffix = Path(resolve_path(path)).suffix.lower()
    if suffix in (".json", ".jsonl"):
        return {"suffix": suffix}
    import datasets

    return {"suffix": suffix, "datasets": datasets.__version__}


def _report_to_dict(report):
    data = dataclasses.asdict(report)
    del data["stats"]["lengths"], data["stats"]["origins"], data["cache"], data["cache_entry"]
    return data


def _report_from_dict(data, samples, objective):
    stats = EncodeStats(**data.pop("stats"))
    stats.lengths = [objective.sample_length(s) for s in samples]
    return SourceReport(stats=stats, **data)


def load_source(ds_cfg, build):
    """One dataset's encoded samples and report (a SourceBuild says how), from the cache
    when possible."""
    truncation = ds_cfg.truncation or build.data.truncation
    if not build.data.cache:
        return _encoded_source(ds_cfg, build, truncation)
    keyed = source_cache_key(ds_cfg, build, truncation)
    if keyed is None:
        samples, report = _encoded_source(ds_cfg, build, truncation)
        report.cache = "uncacheable"
        return samples, report
    key, parts = keyed
    root = cache.cache_root(build.data.cache_dir)
    hit = cache.load(root, key, build.objective.fields)
    if hit is not None:
        samples, data = hit
        report = _report_from_dict(data, samples, build.objective)
        report.path = ds_cfg.path  # the same bytes may live under another name
        report.cache, report.cache_entry = "hit", str(root / "datasets" / key)
        return samples, report
    samples, report = _encoded_source(ds_cfg, build, truncation)
    entry = cache.save(root, key, parts, samples, _report_to_dict(report),
                       build.objective.fields)
    report.cache, report.cache_entry = "built", str(entry)
    return samples, report


@dataclass
class ValidationReport:
    """Where the validation samples came from, and their overlap with the training samples."""

    split: list  # [xft.data.split.SplitPart], one per training dataset
    files: list  # paths of val_datasets, used whole
    samples: int  # validation samples (before packing)
    in_training: int  # validation samples identical to a training sample (duplicate records)
    rows: Optional[int] = None  # packed rows, when data.pack is on

    def lines(self):
        rows = f", packed into {self.rows} rows" if self.rows is not None else ""
        yield f"validation: {self.samples} samples{rows}"
        for part in self.split:
            if part.held_out:
                yield part.line()
        for path in self.files:
            yield f"  {path}: validation file, used whole"
        yield (f"  validation samples identical to a training sample: {self.in_training}"
               + (" (the data holds duplicate records)" if self.in_training else ""))


@dataclass
class DataReport:
    """The whole build: one SourceReport per file, the mixture, the packing."""

    sources: list
    samples: int  # samples (or packed rows) in the training dataset
    mixture: Optional[list] = None  # [xft.data.mix.MixPart] when datasets have ratios
    packing: Optional[object] = None  # xft.data.pack.PackStats when data.pack is on
    validation: Optional[ValidationReport] = None  # when a validation set is built
    # The records behind the held-out samples ([xft.data.heldout.HeldOutSource]); None
    # when the objective does not trace samples to records.
    held_out: Optional[list] = None

    def lines(self):
        for source in self.sources:
            yield from source.lines()
        yield from self.combined_lines()

    def combined_lines(self):
        """What happened after the sources were read: split, mixture and packing."""
        if self.validation:
            yield from self.validation.lines()
        if self.mixture:
            total = sum(part.used for part in self.mixture)
            yield f"mixture: {total} samples"
            for part in self.mixture:
                yield part.line(total)
        if self.packing:
            yield self.packing.line()


def has_validation(data_cfg, datasets, val_datasets):
    return bool(data_cfg.test_size is not None or val_datasets
                or any(d.test_size is not None for d in datasets))


def build_datasets(datasets, build, val_datasets=(), seed=0, log=print):
    """(training dataset, validation dataset or None, DataReport).

    `datasets`, `val_datasets`: the config's DatasetCfg lists; `build`: a SourceBuild.
    The validation set is the held-out part of each training dataset (test_size,
    see xft.data.split) plus the val_datasets files; it is never mixed by ratio,
    and it is packed like the training data when data.pack is on.
    """
    data = build.data
    # Config problems fail before any file is read.
    for ds_cfg in [*datasets, *val_datasets]:
        build.objective.map_function(ds_cfg.format)
        FieldMapping(ds_cfg.format, ds_cfg.columns, ds_cfg.tags)
    mixing = check_ratios(datasets, data.mix_size)
    sources = []
    for ds_cfg in datasets:
        with doing(f"building dataset {ds_cfg.path}"):
            samples, report = load_source(ds_cfg, build)
        for line in report.lines():
            log(line)
        sources.append((report, samples))
    reports = [report for report, _ in sources]
    named = [(r.path, s) for r, s in sources]
    validation = None
    if has_validation(data, datasets, val_datasets):
        named, validation, val_report = _validation_samples(named, datasets, val_datasets,
                                                            build, seed, log)
    mixture = None
    if mixing:
        samples, mixture = mix(named, [d.ratio for d in datasets], data.mix_size, seed=seed)
    else:
        samples = [sample for _, source_samples in named for sample in source_samples]
    if not samples:
        raise DataError(f"no training samples left: {_why_empty(reports, data)}")
    packing = None
    if data.pack:
        samples, packing = build.objective.pack(samples, data.max_length, seed)
        if validation:
            validation, val_packing = build.objective.pack(validation, data.max_length, seed)
            val_report.rows = val_packing.rows
    report = DataReport(reports, len(samples), mixture, packing,
                        val_report if validation is not None else None)
    if validation is not None:
        report.held_out = held_out_sources(datasets, reports, val_report.split)
    for line in report.combined_lines():
        log(line)
    return (EncodedDataset(samples),
            EncodedDataset(validation) if validation is not None else None, report)


def _why_empty(reports, data_cfg):
    """What removed every sample, with the setting that decides each part."""
    records = sum(r.records for r in reports)
    parts = [f"{records} records read"]
    for count, what in [
            (sum(r.skipped_bad for r in reports), "bad records skipped (data.on_bad_record="
                                                  "'skip'; see the reasons above)"),
            (sum(r.stats.dropped_too_long for r in reports),
             f"samples longer than data.max_length={data_cfg.max_length} dropped "
             "(raise it, or set data.truncation='truncate')"),
            (sum(r.stats.dropped_no_label for r in reports),
             "samples with no trained token dropped (check data.train_on and loss flags)")]:
        if count:
            parts.append(f"{count} {what}")
    encoded = sum(r.stats.samples for r in reports)
    if encoded:  # every one went to the validation split
        parts.append(f"{encoded} samples, all held out for validation (test_size)")
    return "; ".join(parts)


def _validation_samples(named, datasets, val_datasets, build, seed, log):
    """Split the training sources and read the validation files.

    Returns (training sources, validation samples, ValidationReport)."""
    from xft.data.split import split_sources

    named, held_out, parts = split_sources(named, datasets, build.data.test_size, seed)
    samples = list(held_out)
    for ds_cfg in val_datasets:
        with doing(f"building validation dataset {ds_cfg.path}"):
            file_samples, report = load_source(ds_cfg, build)
        for line in report.lines():
            log(line)
        samples += file_samples
    if not samples:
        raise DataError("the validation set is empty: test_size holds out no sample and "
                        "val_datasets have none left after filtering")
    fields = build.objective.fields
    seen = {_sample_key(s, fields) for _, source_samples in named for s in source_samples}
    overlap = sum(_sample_key(s, fields) in seen for s in samples)
    report = ValidationReport(parts, [d.path for d in val_datasets], len(samples), overlap)
    return named, samples, report


def _sample_key(sample, fields):
    return tuple(tuple(sample[name]) for name in fields)
