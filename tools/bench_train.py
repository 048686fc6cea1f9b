"""Benchmark: LoRA training throughput and memory, xft (packed) against the textbook recipe.

Both sides train the same randomly initialised Llama-shape model (fp32, CPU)
with the same LoRA (r, alpha, dropout, every linear layer of the decoder) for one
epoch over the same first --records records of alpaca_en_demo, in the same
Alpaca prompt format, so they see the same real tokens:

- baseline: the recipe of the DeepLearning.AI fine-tuning course, with LoRA:
  each record tokenized as prompt + answer (labels = input_ids), PEFT's
  get_peft_model, transformers.Trainer with DataCollatorForSeq2Seq padding each
  batch to its longest sample (--batch-size records per step);
- xft: an Experiment built in code with data.pack=True (rows of
  --pack-length tokens, --pack-batch rows per step), run through
  build_experiment and xft's MMEngine (or, with --engine hf, Trainer) adapter.

Each side runs in its own subprocess, one after the other, so its peak RSS
(VmHWM, read by the child at its end) is its own. Printed for each: effective
(non-pad) tokens/s over the training call (for xft this includes its final
checkpoint and the export of the adapter), the pad fraction of the slots the
model computed, peak RSS, and the ratios xft / baseline.

Defaults (about 20M parameters, ~1-2 minutes a side on two free cores):
Mistral-v0.3 tokenizer (32768 tokens; --tokenizer .../qwen2 gives a 151k
vocabulary and a much larger head), hidden 256, 4 layers, 4 heads,
intermediate 688, 256 records.

    python tools/bench_train.py
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

ALPACA_SYSTEM = ("Below is an instruction that describes a task. Write a response that "
                 "appropriately completes the request.")  # as xft's `alpaca` template


class SlotCounter:
    """Wraps a collator; counts real tokens and the padded slots of the batches it makes."""

    def __init__(self, collate):
        self.collate, self.real, self.slots = collate, 0, 0

    def __call__(self, samples):
        lengths = [len(s["input_ids"]) for s in samples]
        self.real += sum(lengths)
        self.slots += len(lengths) * max(lengths)
        return self.collate(samples)


def peak_rss_mib():
    """This process's peak resident memory (Linux /proc), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_baseline(args):
    """The course recipe: tokenize prompt+answer per record, pad per batch, Trainer + PEFT."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq,
                              Trainer, TrainingArguments)

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    records = json.loads(Path(args.data).read_text(encoding="utf-8"))[:args.records]

    def tokenize(record):
        instruction = record["instruction"]
        if record["input"]:
            instruction += "\n" + record["input"]
        text = (f"{ALPACA_SYSTEM}\n\n### Instruction:\n{instruction}\n\n### Response:\n"
                f"{record['output']}{tokenizer.eos_token}")
        ids = tokenizer(text, truncation=True, max_length=args.pack_length)["input_ids"]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)}

    dataset = Dataset.from_list(records).map(tokenize, remove_columns=list(records[0]))
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(
        r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.05, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj"]))
    collator = SlotCounter(DataCollatorForSeq2Seq(tokenizer, padding="longest"))
    training_args = TrainingArguments(
        output_dir=args.work_dir, per_device_train_batch_size=args.batch_size,
        num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="cosine",
        warmup_steps=0.03, max_grad_norm=1.0, logging_steps=10, save_strategy="no",
        report_to="none", disable_tqdm=True, seed=args.seed, use_cpu=True)
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset,
                      data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "real": collator.real, "slots": collator.slots,
            "steps": trainer.state.global_step}


def run_xft(args):
    """The same data and LoRA through xft's API, packed."""
    from xft.config.schema import (DataCfg, DatasetCfg, Experiment, MethodCfg, ModelCfg,
                                   OptimCfg, TokenizerCfg, TrainCfg)
    from xft.engine.builder import build_experiment

    experiment = Experiment(
        model=ModelCfg(path=args.model_dir), tokenizer=TokenizerCfg(path=args.tokenizer),
        template="alpaca",
        datasets=[DatasetCfg(path=args.data, format="alpaca", max_samples=args.records)],
        data=DataCfg(max_length=args.pack_length, truncation="truncate", pack=True,
                     cache=False),
        method=MethodCfg(type="lora", r=args.lora_r, alpha=args.lora_alpha, dropout=0.05),
        optim=OptimCfg(lr=args.lr, max_grad_norm=1.0),
        train=TrainCfg(backend=args.engine, batch_size=args.pack_batch, epochs=1,
                       lr_scheduler="cosine", warmup_ratio=0.03, log_interval=10,
                       save_interval=10**9),
        seed=args.seed)
    built = build_experiment(experiment, config_text="", work_dir=args.work_dir)
    built.collator = counter = SlotCounter(built.collator)
    if args.engine == "hf":
        from xft.engine.hf_backend import run_hf as run
    else:
        from xft.engine.mmengine_backend import run_mmengine as run
    start = time.perf_counter()
    run(built)
    seconds = time.perf_counter() - start
    from xft.engine.monitor import read_metrics

    # The monitor's clock: first to last optimizer step, without the runner's
    # setup, final checkpoint and export that `seconds` includes.
    loop = read_metrics(args.work_dir)[-1]["elapsed"]
    return {"seconds": seconds, "loop_seconds": loop, "real": counter.real,
            "slots": counter.slots, "steps": built.plan.total_steps}


def make_model(args, directory):
    """A random-weight Llama-shape model, saved once and loaded by both sides."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden,
                         intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.heads,
                         max_position_embeddings=max(2048, args.pack_length),
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def run_side(side, args, model_dir, work_dir):
    """Run one side in a child process; its result dict (with peak RSS)."""
    command = [sys.executable, __file__, "--side", side, "--model-dir", str(model_dir),
               "--work-dir", str(work_dir)] + args.forward
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets/alpaca/alpaca_en_demo.json"))
    parser.add_argument("--tokenizer",
                        default=str(SHARED / "tokenizers/mistral-7b-instruct-v0.3"),
                        help="its vocabulary size is the model's")
    parser.add_argument("--records", type=int, default=256, help="first N records, one epoch")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--intermediate", type=int, default=688)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=8, help="baseline records per step")
    parser.add_argument("--pack-length", type=int, default=1024,
                        help="xft packed row length (also the baseline's truncation length)")
    parser.add_argument("--pack-batch", type=int, default=2, help="xft packed rows per step")
    parser.add_argument("--engine", choices=["mmengine", "hf"], default="mmengine")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--side", choices=["baseline", "xft"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.forward = sys.argv[1:]  # the parent's options, passed on to each child
    return args


def main():
    args = parse_args()
    if args.side:  # child: train one side, print its result as the last line
        result = (run_baseline if args.side == "baseline" else run_xft)(args)
        result["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(result))
        return
    for path in (args.data, args.tokenizer):
        if not Path(path).exists():
            raise SystemExit(f"bench_train: {path} not found; this benchmark needs the shared "
                             f"data folder ({SHARED}) or --data/--tokenizer pointing at copies")
    with tempfile.TemporaryDirectory() as tmp:
        parameters = make_model(args, Path(tmp) / "model")
        results = {side: run_side(side, args, Path(tmp) / "model", Path(tmp) / side)
                   for side in ("baseline", "xft")}
    print(f"Llama {args.layers}x{args.hidden} (intermediate {args.intermediate}, "
          f"vocab from {Path(args.tokenizer).name}), {parameters / 1e6:.1f}M parameters, fp32, "
          f"LoRA r={args.lora_r} alpha={args.lora_alpha}; {args.records} alpaca records, 1 epoch; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"  baseline: batch {args.batch_size} records padded to the longest")
    print(f"  xft ({args.engine}): packed rows of {args.pack_length}, {args.pack_batch} per step")
    rates = {}
    for side, r in results.items():
        rates[side] = r["real"] / r["seconds"]
        print(f"  {side:8s} {r['real']} real tokens in {r['slots']} slots, {r['steps']} steps, "
              f"{r['seconds']:.1f} s: {rates[side]:.0f} effective tokens/s, pad fraction "
              f"{1 - r['real'] / r['slots']:.1%}, peak RSS {r['peak_rss_mib']:.0f} MiB")
        if "loop_seconds" in r:
            print(f"           (training loop alone {r['loop_seconds']:.1f} s: "
                  f"{r['real'] / r['loop_seconds']:.0f} effective tokens/s)")
    print(f"  xft / baseline: effective tokens/s {rates['xft'] / rates['baseline']:.2f}x, "
          f"peak RSS {results['xft']['peak_rss_mib'] / results['baseline']['peak_rss_mib']:.2f}x")


if __name__ == "__main__":
    main()
