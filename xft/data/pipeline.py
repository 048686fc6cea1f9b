"""Build the training dataset from the config's dataset list.

load records (JSON/JSONL read here for precise errors; other types through
`datasets.load_dataset`) → fill placeholders → format map fn → conversation
(or a document, for pretraining) → encode (template + tokenizer; documents get
BOS/EOS and no template) → a torch Dataset of {input_ids, labels}.
"""

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from torch.utils.data import Dataset

from xft.data.conversation import check_rendered, with_system
from xft.data.encode import EncodeStats, encode_conversations, encode_documents
from xft.data.formats import format_name, get_format, to_conversation
from xft.errors import DataError, RecordError
from xft.paths import resolve_path

SKIP_REASON_SAMPLES = 5


class SFTDataset(Dataset):
    """Encoded samples: each item is {'input_ids': [...], 'labels': [...]}."""

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
    stats: EncodeStats = field(default_factory=EncodeStats)

    def lines(self):
        s = self.stats
        yield (f"{self.path}: {self.records} records → {s.samples} samples "
               f"({s.label_tokens} trained tokens of {s.tokens})")
        for label, count in [("bad records skipped", self.skipped_bad),
                             ("samples longer than max_length dropped", s.dropped_too_long),
                             ("samples truncated to max_length", s.truncated),
                             ("documents split into max_length pieces", s.split_documents),
                             ("samples with no trained token dropped", s.dropped_no_label)]:
            if count:
                yield f"  {label}: {count}"
        for reason, count in Counter(self.skip_reasons).most_common(SKIP_REASON_SAMPLES):
            yield f"    {count} × {reason}"


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
    try:
        if builder:
            ds = datasets.load_dataset(builder, data_files=resolved, split="train")
        else:
            ds = datasets.load_dataset(resolved, split="train")
    except Exception as e:
        raise DataError(f"cannot load dataset: {e}", file=path) from None
    return ds.to_list()


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


def map_records(records, ds_cfg, experiment, template, report):
    """Records → (conversations, documents) through the dataset's format map function.

    A bad record raises DataError naming file, record index and field, or (with
    data.on_bad_record='skip') is counted in `report` with its reason.
    """
    conversations, documents = [], []
    for index, record in enumerate(records):
        try:
            record = fill_placeholders(record, ds_cfg.placeholders)
            mapped = to_conversation(ds_cfg.format, record)
            if isinstance(mapped, str):
                documents.append(mapped)
                continue
            mapped = with_system(mapped, experiment.system)
            # Template-specific checks (e.g. no system role), and nothing left unrendered.
            check_rendered(mapped, lambda m: template.render(m).text, template.name)
        except RecordError as e:
            if experiment.data.on_bad_record == "error":
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
        conversations.append(mapped)
    return conversations, documents


def build_dataset(experiment, tokenizer, template, log=print):
    """The training dataset and one report per source file."""
    all_samples, reports = [], []
    for ds_cfg in experiment.datasets:
        get_format(ds_cfg.format)  # unknown format names fail before any file is read
        records = read_records(ds_cfg.path)
        if ds_cfg.max_samples is not None:
            records = records[:ds_cfg.max_samples]
        report = SourceReport(path=ds_cfg.path, records=len(records))
        conversations, documents = map_records(records, ds_cfg, experiment, template, report)
        samples, report.stats = encode_conversations(
            conversations, template, tokenizer, experiment.data.max_length,
            experiment.data.truncation)
        if documents:
            doc_samples, doc_stats = encode_documents(documents, tokenizer,
                                                      experiment.data.max_length)
            samples += doc_samples
            report.stats.merge(doc_stats)
        all_samples += samples
        reports.append(report)
        for line in report.lines():
            log(line)
    if not all_samples:
        raise DataError("no training samples left after filtering; see the report above")
    return SFTDataset(all_samples), reports
