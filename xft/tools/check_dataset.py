"""`xft check-dataset CFG`: validate a config's data and show what training will see.

`--data FILE|NAME` (with --format/--columns/--tags/--placeholders/--registry, as `xft
eval` takes them) checks that dataset instead of the config's, as the config would train it.

Builds the datasets with the one build step training uses (xft.build: the
template bound to the tokenizer with data.train_on, the configured objective;
every record is validated and data.on_bad_record decides between failing and
skipping with a count), then prints a few samples as the objective shows them
(SFT: trained tokens marked), length statistics, the drop / truncation counts
and the packing efficiency, and writes a histogram of sample lengths to a PNG.
"""

import sys
from pathlib import Path

from xft.errors import ConfigError
from xft.objectives.sft import masked_text  # noqa: F401  (re-exported for the CLI's users)

PERCENTILES = (0, 50, 90, 95, 99, 100)


def percentiles(lengths, points=PERCENTILES):
    """Nearest-rank percentiles of a list of numbers (p0 = min, p100 = max)."""
    ordered = sorted(lengths)
    return {p: ordered[min(len(ordered) - 1, max(0, -(-p * len(ordered) // 100) - 1))]
            for p in points}


def write_histogram(lengths, max_length, path):
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(lengths, bins=min(50, max(1, len(set(lengths)))), color="#4878a8")
    ax.axvline(max_length, color="#c03030", linestyle="--", label=f"max_length {max_length}")
    ax.set_xlabel("tokens per sample")
    ax.set_ylabel("samples")
    ax.set_title(f"{len(lengths)} samples kept (truncated ones at max_length)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def check_dataset(config, cfg_options=None, num_samples=3, plot=None, color=None, out=print,
                  data=None):
    """Run the check; returns the DataReport. `plot` defaults to <config stem>_lengths.png.
    `data`: (dataset argument, parsed options) of `--data` (xft.tools.data_args), checked
    instead of the config's datasets, with the config's tokenizer, template and data keys."""
    import dataclasses

    from xft.build import build, without_packing
    from xft.config import load_config

    cfg, experiment = load_config(config, cfg_options, data_paths=data is None)
    if data is not None:
        from xft.tools.data_args import dataset_entry

        spec, args = data
        source = dataset_entry(spec, args, "--data", "alpaca", experiment.data.registry)
        experiment = dataclasses.replace(experiment, datasets=[source], val_datasets=[])
    if color is None:
        color = sys.stdout.isatty()
    # Samples are shown and measured one by one; packing is measured separately below.
    built = build(without_packing(experiment), parts=("data",), log=out)
    dataset, report, objective = built.dataset, built.report, built.objective

    out("")
    for index in range(min(num_samples, len(dataset))):
        sample = dataset[index]
        out(f"--- sample {index} ({objective.sample_length(sample)} tokens; "
            f"trained text {'in green' if color else 'in [[ ]]'}) ---")
        out(objective.show(sample, built.tokenizer, color))

    max_length = experiment.data.max_length
    stats = [source.stats for source in report.sources]
    lengths = [n for s in stats for n in s.lengths]
    out("")
    out("--- statistics ---")
    out(f"records: {sum(s.records for s in report.sources)}, "
        f"bad records skipped: {sum(s.skipped_bad for s in report.sources)}, "
        f"questionable (trained as they are): "
        f"{sum(e['count'] for s in report.sources for e in s.questionable.values())}")
    out(f"samples: {sum(s.samples for s in stats)} kept, {len(dataset)} in the training set; "
        f"dropped as longer than max_length ({max_length}): "
        f"{sum(s.dropped_too_long for s in stats)}, "
        f"truncated: {sum(s.truncated for s in stats)}, "
        f"dropped with no trained token: {sum(s.dropped_no_label for s in stats)}")
    out("token length percentiles: " + ", ".join(
        f"p{p}={n}" for p, n in percentiles(lengths).items()))
    try:
        _, packing = objective.pack([dataset[i] for i in range(len(dataset))], max_length,
                                    experiment.seed)
    except ConfigError as e:  # an objective that does not pack (e.g. preference pairs)
        out(f"packing: {e}")
    else:
        state = "on:" if experiment.data.pack else "off (data.pack=False); if on,"
        out(f"packing {state} {packing.rows} rows of {packing.max_length} tokens hold the "
            f"{packing.samples} samples, efficiency {100 * packing.efficiency:.2f}%")
    plot = Path(plot or f"{Path(cfg.filename).stem}_lengths.png")
    write_histogram(lengths, max_length, plot)
    out(f"length histogram written to {plot}")
    return report
