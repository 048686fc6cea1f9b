"""Benchmark: xft's data pipeline against an XTuner-0.1-style baseline, side by side.

Both turn the same Alpaca file (alpaca_en_demo repeated to --records records)
into input_ids/labels with the Qwen2 tokenizer and the qwen2_chat prompt format:

- baseline: `datasets.load_dataset('json')`, then a per-record `datasets.map`
  that maps the record to turns and tokenizes every piece separately (prompt,
  answer, separator) and concatenates them, as XTuner 0.1's encode_fn does;
- xft: `xft.build.build_data` (the SFT objective) with the cache off (a cold build),
  which renders each conversation once and tokenizes batches with offsets.

The ratio compares these two. A third line shows an xft rebuild that hits its
dataset cache (what a second run of the same config does).

Prints samples/s of each and the ratio. Each side runs --repeats times,
alternating, and its fastest run counts (the machine may be shared). The CPU
seconds (this process and its worker processes, all threads) are printed too:
they show how much of a wall-clock gain is less work and how much is parallelism
(xft tokenizes in batches, which the tokenizers library spreads over threads,
and large datasets in several processes, see xft.data.parallel).

    python tools/bench_data.py --records 20000
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

from xft.config.schema import DataCfg, DatasetCfg, Experiment, ModelCfg  # noqa: E402
from xft.data.encode import IGNORE_INDEX  # noqa: E402
from xft.build import build_data  # noqa: E402
from xft.data.templates import get_template  # noqa: E402
from xft.objectives.sft import SFT  # noqa: E402


def baseline_build(path, tokenizer, template, max_length, cache_dir):
    """XTuner 0.1's process_hf_dataset with num_proc=1: per-record maps and filters."""
    import datasets

    def alpaca_map_fn(record):  # record → turns
        user = record["instruction"]
        if record.get("input"):
            user += "\n" + record["input"]
        return {"conversation": [{"input": user, "output": record["output"]}]}

    def template_map_fn(example):  # the prompt format around each turn
        conversation = []
        for i, turn in enumerate(example["conversation"]):
            prompt = template.user.format(content=turn["input"]) + template.assistant_prefix
            if i == 0 and template.default_system:
                prompt = template.system.format(content=template.default_system) + prompt
            conversation.append({"input": prompt, "output": turn["output"],
                                 "output_suffix": template.assistant_suffix,
                                 "sep": template.turn_separator})
        return {"conversation": conversation}

    def encode_fn(example):  # tokenize each piece separately, concatenate
        input_ids, labels = [], []
        for turn in example["conversation"]:
            prompt_ids = tokenizer.encode(turn["input"], add_special_tokens=False)
            answer_ids = tokenizer.encode(turn["output"] + turn["output_suffix"],
                                          add_special_tokens=False)
            sep_ids = tokenizer.encode(turn["sep"], add_special_tokens=False)
            input_ids += prompt_ids + answer_ids + sep_ids
            labels += [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [IGNORE_INDEX] * len(sep_ids)
        return {"input_ids": input_ids[:max_length], "labels": labels[:max_length]}

    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=cache_dir)
    ds = ds.map(alpaca_map_fn, remove_columns=ds.column_names)
    ds = ds.map(template_map_fn)
    ds = ds.filter(lambda example: len(example["conversation"]) > 0)
    ds = ds.map(encode_fn, remove_columns=ds.column_names)
    ds = ds.filter(lambda example: any(label >= 0 for label in example["labels"]))
    return len(ds)


def xft_build(path, tokenizer, template, max_length, cache_dir=None):
    """build_data; with cache_dir, through the dataset cache there (else a cold build)."""
    exp = Experiment(model=ModelCfg(path="unused"), template=template.name,
                     datasets=[DatasetCfg(path=str(path), format="alpaca")],
                     data=DataCfg(max_length=max_length, truncation="truncate",
                                  cache=cache_dir is not None, cache_dir=cache_dir))
    dataset, _, _ = build_data(exp, tokenizer, template, SFT(), log=lambda _: None)
    return len(dataset)


def _cpu_seconds():
    own = time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + children.ru_utime + children.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", default=str(SHARED / "datasets/alpaca/alpaca_en_demo.json"))
    parser.add_argument("--tokenizer", default=str(SHARED / "tokenizers/qwen2"))
    args = parser.parse_args()

    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    template = get_template("qwen2_chat", tokenizer)
    base = json.loads(Path(args.data).read_text(encoding="utf-8"))
    records = (base * (args.records // len(base) + 1))[:args.records]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alpaca_repeated.json"
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
        builders = {
            # A fresh datasets cache each time, or a run would read the previous one's.
            "baseline": lambda run: baseline_build(path, tokenizer, template, args.max_length,
                                                   cache_dir=os.path.join(tmp, f"hf{run}")),
            "xft": lambda run: xft_build(path, tokenizer, template, args.max_length),
            "xft, cache hit": lambda run: xft_build(path, tokenizer, template, args.max_length,
                                                    cache_dir=os.path.join(tmp, "xft")),
        }
        xft_build(path, tokenizer, template, args.max_length, os.path.join(tmp, "xft"))
        best = {name: float("inf") for name in builders}
        cpu, counts = {}, {}
        for run in range(args.repeats):
            for name, build in builders.items():
                cpu_start, start = _cpu_seconds(), time.perf_counter()
                counts[name] = build(run)
                seconds = time.perf_counter() - start
                if seconds < best[name]:
                    best[name], cpu[name] = seconds, _cpu_seconds() - cpu_start
    print(f"{args.records} alpaca records, qwen2 tokenizer, max_length {args.max_length}, "
          f"best of {args.repeats}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    rates = {}
    for name, seconds in best.items():
        rates[name] = counts[name] / seconds
        print(f"  {name:14s} {counts[name]} samples in {seconds:.2f} s = {rates[name]:.0f} samples/s "
              f"({cpu[name]:.2f} CPU s)")
    print(f"  xft / baseline: {rates['xft'] / rates['baseline']:.2f}x")


if __name__ == "__main__":
    main()
