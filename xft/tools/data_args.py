"""The dataset options of tools that read data without a config (`xft eval --data
/--prompts`, `xft template render --input`), resolved into the config's own DatasetCfg so
the training pipeline reads them (xft.data.pipeline): a file or a registry name, a format
name or "CONFIG.py:NAME" (a config's map function), `columns`/`tags` mappings,
placeholders. Everything is checked here, before any model or tokenizer loads.
"""

from pathlib import Path

from xft.config.dataset_registry import registry_entry
from xft.config.schema import dataset_cfg
from xft.data.formats import FieldMapping, get_format
from xft.data.heldout import check_heldout_file, is_heldout_file
from xft.errors import XftError
from xft.paths import check_local_data, resolve_path


def add_data_arguments(parser, default_format):
    parser.add_argument("--format", help="format of the dataset records: a format name (see "
                        "docs/formats.md) or CONFIG.py:NAME, a map function a config defines "
                        f"(default: a run's heldout.jsonl is read as such, else {default_format})")
    parser.add_argument("--columns", nargs="+", metavar="FIELD=COLUMN",
                        help="the format's field → the record's, e.g. messages=conversations")
    parser.add_argument("--tags", nargs="+", metavar="ROLE=VALUE",
                        help="a role → the record's value for it, e.g. user=human")
    parser.add_argument("--placeholders", nargs="+", metavar="KEY=VALUE",
                        help="{{KEY}} → VALUE in the records, e.g. name=Tuna")
    parser.add_argument("--registry", nargs="+", metavar="FILE", default=[],
                        help="dataset registry files (xft's or LLaMA-Factory's dataset_info."
                             "json) for datasets given by name")


def parse_pairs(pairs, option):
    """['0=负面', '1=正面'] → {'0': '负面', '1': '正面'}; `option` names the flag in errors."""
    mapping = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise XftError(f"{option}: expected KEY=VALUE, got {pair!r}")
        mapping[key.strip()] = value.strip()
    return mapping


def is_registry_name(spec):
    """A dataset argument that names no local file and looks like a registry name."""
    return not Path(resolve_path(spec)).exists() and "/" not in spec and "." not in spec


def dataset_entry(spec, args, option, default_format, registries=(), check_format=None):
    """The DatasetCfg of a tool's dataset argument `spec` (a path or a registry name) with
    the --format/--columns/--tags/--placeholders/--registry of `args` (and `registries`,
    e.g. a config's data.registry), checked. `check_format`: the objective's
    map_function (default: SFT's formats)."""
    given = {"format": args.format, "columns": parse_pairs(args.columns, "--columns"),
             "tags": parse_pairs(args.tags, "--tags"),
             "placeholders": parse_pairs(args.placeholders, "--placeholders")}
    given = {k: v for k, v in given.items() if v}
    if is_registry_name(spec):
        where = f"{option} {spec} (no such file)"
        entry = {**registry_entry(spec, [*args.registry, *registries], where), **given}
    else:
        entry = {"path": spec, **given}
    if "format" not in entry:
        entry["format"] = "heldout" if is_heldout_file(resolve_path(entry["path"])) \
            else default_format
    ds = dataset_cfg(entry, option)
    check_local_data(ds.path, option)
    (check_format or get_format)(ds.format)
    FieldMapping(ds.format, ds.columns, ds.tags)
    if ds.format == "heldout":  # each line names its own format
        check_heldout_file(resolve_path(ds.path))
    return ds
