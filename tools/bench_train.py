"""Benchmark: LoRA training throughput and memory, xft (packed) against the textbook recipe.

Both sides train the same randomly initialised Llama-shape model (fp32, CPU)
with the same LoRA (r, alpha, dropout, every linear layer of the decoder) for one
epoch over the same first records of alpaca_en_demo (--steps × --batch-size of
them, unless --records is given), rendered in the same prompt format, with the
same tokens carrying labels (the answer and its end-of-turn token), so both
train on the same tokens:

- baseline: the textbook recipe (as in the DeepLearning.AI fine-tuning course),
  with LoRA: each record tokenized as prompt + answer with the prompt's labels
  masked, PEFT's get_peft_model, transformers.Trainer with
  DataCollatorForSeq2Seq padding each batch of --batch-size records to its
  longest; the model computes logits at every slot (--steps steps);
- xft: an Experiment built in code with data.pack=True (rows of --max-length
  tokens, --pack-batch rows per step) and its default loss (logits only at
  labelled positions, chunked), run through build_experiment and xft's MMEngine
  (or, with --engine hf, Trainer) adapter. --xft-option KEY=VALUE changes the
  experiment (e.g. train.loss_at_labels_only=False) to measure one switch.

Each side runs in its own subprocess, so its peak RSS (VmHWM, read by the
child at its end) is its own; with --rounds N the two sides alternate N times
(baseline, xft, baseline, ...) so that a change of the machine's load hits both.
Printed for each run: real (non-pad) tokens/s over the training call (for xft
this includes its final checkpoint and the export of the adapter, for the
baseline its save_model), the same over the training loop alone, the pad
fraction of the slots the model computed, peak RSS, and the ratios.

On a GPU (--device cuda --precision bf16) the run also prints peak GPU memory and
MFU; --method full, --bits 4 (QLoRA) and --gradient-checkpointing apply to both
sides. The commands of the GPU figures are in docs/benchmarks.md.

Defaults: the setting of issue 7 (Qwen2's 151k vocabulary, Llama 512 hidden ×
8 layers, ChatML, max_length 512, micro-batch 4, LoRA r16 on all linear layers,
30 baseline steps). The earlier, smaller setting:

    python tools/bench_train.py --template alpaca \
        --tokenizer ../shared/data/tokenizers/mistral-7b-instruct-v0.3 --hidden 256 \
        --layers 4 --heads 4 --intermediate 688 --lora-r 8 --lora-alpha 16 \
        --records 256 --batch-size 8 --max-length 1024 --pack-batch 2
"""

import argparse
import ast
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


def render_prompt_and_answer(template, record, eos_token):
    """The baseline's text of one record, split where the labels start.

    Written by hand to match xft's `alpaca` and `chatml` templates (the answer
    part is what carries labels in xft too).
    """
    instruction = record["instruction"]
    if record["input"]:
        instruction += "\n" + record["input"]
    if template == "chatml":
        return (f"<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n",
                f"{record['output']}<|im_end|>")
    return (f"{ALPACA_SYSTEM}\n\n### Instruction:\n{instruction}\n\n### Response:\n",
            f"{record['output']}{eos_token}")


class SlotCounter:
    """Wraps a collator; counts real tokens, padded slots and label tokens of its batches."""

    def __init__(self, collate):
        self.collate, self.real, self.slots, self.labels = collate, 0, 0, 0

    def __call__(self, samples):
        lengths = [len(s["input_ids"]) for s in samples]
        self.real += sum(lengths)
        self.slots += len(lengths) * max(lengths)
        batch = self.collate(samples)
        self.labels += int((batch["labels"][:, 1:] != -100).sum())  # shifted, as the loss
        return batch


def cpu_seconds():
    """CPU time of this process, all threads (on a shared machine it varies less than
    wall-clock time, which stretches with the other jobs' load)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_gpu_mib():
    """Peak GPU memory this process allocated through PyTorch, in MiB."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def peak_rss_mib():
    """This process's peak resident memory (Linux /proc), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def loop_clock(args):
    """A Trainer callback timing the training loop as xft's monitor does: from the start
    of training to the end of the last optimizer step."""
    from transformers import TrainerCallback

    class LoopClock(TrainerCallback):
        def on_train_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, _, state, *__, **___):
            if state.global_step == state.max_steps:
                synchronize(args)
                self.seconds = time.perf_counter() - self.start

    return LoopClock()


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
        prompt, answer = render_prompt_and_answer(args.template, record, tokenizer.eos_token)
        ids = tokenizer(prompt + answer, truncation=True, max_length=args.max_length)["input_ids"]
        masked = len(tokenizer(prompt)["input_ids"])
        labels = [-100] * masked + ids[masked:]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels[:len(ids)]}

    dataset = Dataset.from_list(records).map(tokenize, remove_columns=list(records[0]))
    load = {"dtype": torch.bfloat16 if base_in_bf16(args) else torch.float32}
    if args.bits:
        from transformers import BitsAndBytesConfig

        load["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, **load)
    if args.bits:  # the QLoRA recipe's preparation (fp32 norms, input grads, checkpointing)
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=args.gradient_checkpointing)
    if args.method == "lora":
        model = get_peft_model(model, LoraConfig(
            r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.05,
            task_type="CAUSAL_LM", target_modules="all-linear"))
    collator = SlotCounter(DataCollatorForSeq2Seq(tokenizer, padding="longest"))
    training_args = TrainingArguments(
        output_dir=args.work_dir, per_device_train_batch_size=args.batch_size,
        num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="cosine",
        warmup_steps=0.03, max_grad_norm=1.0, logging_steps=10, save_strategy="no",
        report_to="none", disable_tqdm=True, seed=args.seed, use_cpu=args.device == "cpu",
        bf16=args.precision == "bf16", gradient_checkpointing=args.gradient_checkpointing)
    clock = loop_clock(args)
    trainer = Trainer(model=model, args=training_args, train_dataset=dataset,
                      data_collator=collator, callbacks=[clock])
    start, cpu = time.perf_counter(), cpu_seconds()
    trainer.train()
    trainer.save_model()  # the recipe's last step; xft's timing includes its export too
    synchronize(args)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "loop_seconds": clock.seconds,
            "real": collator.real,
            "slots": collator.slots, "label_tokens": collator.labels,
            "steps": trainer.state.global_step}


def run_xft(args):
    """The same data and LoRA through xft's API, packed."""
    from xft.config.schema import (DataCfg, DatasetCfg, Experiment, MethodCfg, ModelCfg,
                                   OptimCfg, TokenizerCfg, TrainCfg)
    from xft.engine.builder import build_experiment

    from xft.config.schema import QuantizationCfg

    model = ModelCfg(path=args.model_dir,
                     dtype="bfloat16" if base_in_bf16(args) else "float32",
                     gradient_checkpointing=args.gradient_checkpointing,
                     quantization=QuantizationCfg(bits=4) if args.bits else None)
    experiment = Experiment(
        model=model, tokenizer=TokenizerCfg(path=args.tokenizer),
        template=args.template,
        datasets=[DatasetCfg(path=args.data, format="alpaca", max_samples=args.records)],
        data=DataCfg(max_length=args.max_length, truncation="truncate", pack=True,
                     cache=False),
        method=MethodCfg(type=args.method, r=args.lora_r, alpha=args.lora_alpha, dropout=0.05),
        optim=OptimCfg(lr=args.lr, max_grad_norm=1.0),
        train=TrainCfg(engine=args.engine, batch_size=args.pack_batch, epochs=1,
                       lr_scheduler="cosine", warmup_ratio=0.03, log_interval=10,
                       save_interval=10**9,
                       mixed_precision="bf16" if args.precision == "bf16" else "no"),
        seed=args.seed)
    apply_xft_options(experiment, args.xft_option)
    built = build_experiment(experiment, config_text="", work_dir=args.work_dir)
    built.collator = counter = SlotCounter(built.collator)
    if args.engine == "hf":
        from xft.engine.hf_trainer import run
    else:
        from xft.engine.mmengine_run import run
    start, cpu = time.perf_counter(), cpu_seconds()
    run(built)
    synchronize(args)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    from xft.engine.monitor import read_metrics

    # The monitor's clock: first to last optimizer step, without the runner's
    # setup, final checkpoint and export that `seconds` includes.
    loop = read_metrics(args.work_dir)[-1]["elapsed"]
    return {"seconds": seconds, "cpu_seconds": cpu, "loop_seconds": loop,
            "real": counter.real, "slots": counter.slots, "label_tokens": counter.labels,
            "steps": built.plan.total_steps}


def apply_xft_options(experiment, options):
    """Set each KEY=VALUE (e.g. train.loss_chunk_size=512) on the xft side's Experiment."""
    for option in options:
        key, value = option.split("=", 1)
        section, name = key.split(".")
        setattr(getattr(experiment, section), name, ast.literal_eval(value))


def base_in_bf16(args):
    """Frozen base weights are stored in bf16 under bf16 training (LoRA, QLoRA's
    non-quantized rest); full fine-tuning keeps fp32 master weights."""
    return args.precision == "bf16" and args.method == "lora"


def synchronize(args):
    """Wait for queued GPU work, so that a clock read afterwards counts it."""
    if args.device == "cuda":
        import torch

        torch.cuda.synchronize()


def make_model(args, directory):
    """A random-weight Llama-shape model, saved once and loaded by both sides.

    Returns (all parameters, matmul weights): the second counts the weights a token
    is multiplied by (every linear layer and the head, not the embedding lookup)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden,
                         intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads or args.heads,
                         tie_word_embeddings=args.tie_embeddings,
                         max_position_embeddings=max(2048, args.max_length),
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(args.seed)
    # On a GPU a billion-parameter model is initialised there, in bf16 (seconds, not minutes).
    device, dtype = ("cuda", torch.bfloat16) if args.device == "cuda" else ("cpu", torch.float32)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.save_pretrained(directory)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    parameters = sum(p.numel() for p in model.parameters())
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()  # leave the GPU to the two sides
    return parameters, matmul


def run_side(side, args, model_dir, work_dir, script=__file__):
    """Run one side (`script --side SIDE`) in a child process; its result dict (with peak
    RSS)."""
    command = [sys.executable, script, "--side", side, "--model-dir", str(model_dir),
               "--work-dir", str(work_dir)] + args.forward
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def add_model_shape_args(parser):
    """The benchmark model's shape and LoRA options (bench_dpo.py measures the same model)."""
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1376)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets/alpaca/alpaca_en_demo.json"))
    parser.add_argument("--tokenizer", default=str(SHARED / "tokenizers/qwen2"),
                        help="its vocabulary size is the model's")
    parser.add_argument("--template", choices=["chatml", "alpaca"], default="chatml")
    parser.add_argument("--steps", type=int, default=30,
                        help="baseline optimizer steps; the records are steps x batch-size")
    parser.add_argument("--records", type=int, help="first N records, one epoch (overrides "
                        "--steps)")
    add_model_shape_args(parser)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch-size", type=int, default=4, help="baseline records per step")
    parser.add_argument("--max-length", type=int, default=512,
                        help="truncation length of both sides and xft's packed row length")
    parser.add_argument("--pack-batch", type=int, default=4, help="xft packed rows per step")
    parser.add_argument("--kv-heads", type=int, help="key/value heads (default: --heads)")
    parser.add_argument("--tie-embeddings", action="store_true",
                        help="the head shares the embedding matrix (Llama 3.2 1B does)")
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--bits", type=int, choices=[4],
                        help="QLoRA: the base in 4-bit NF4 (double quant, bf16 compute)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: autocast with fp32 trainable weights (LoRA keeps its "
                        "frozen base in bf16)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="the GPU's dense bf16 peak for MFU (H100 SXM: 989)")
    parser.add_argument("--engine", choices=["mmengine", "hf"], default="mmengine")
    parser.add_argument("--xft-option", action="append", default=[], metavar="KEY=VALUE",
                        help="set an xft experiment field, e.g. train.loss_at_labels_only=False")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run baseline and xft alternately this many times each")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--side", choices=["baseline", "xft"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.forward = sys.argv[1:]  # the parent's options, passed on to each child
    if args.records is None:
        args.records = args.steps * args.batch_size
    return args


def loop_rate(run):
    return run["real"] / run["loop_seconds"]


def load_average():
    return os.getloadavg()[0]


def require_inputs(args, tool):
    """Exit with one line when --data or --tokenizer (default: the shared data) is missing."""
    for path in (args.data, args.tokenizer):
        if not Path(path).exists():
            raise SystemExit(f"{tool}: {path} not found; this benchmark needs the shared "
                             f"data folder ({SHARED}) or --data/--tokenizer pointing at copies")


def main():
    args = parse_args()
    if args.side:  # child: train one side, print its result as the last line
        result = (run_baseline if args.side == "baseline" else run_xft)(args)
        result["peak_rss_mib"] = peak_rss_mib()
        if args.device == "cuda":
            result["peak_gpu_mib"] = peak_gpu_mib()
        print(json.dumps(result))
        return
    require_inputs(args, "bench_train")
    method = {"full": "full fine-tuning"}.get(args.method, (
        f"{'QLoRA (NF4)' if args.bits else 'LoRA'} r={args.lora_r} alpha={args.lora_alpha} "
        "on all linear layers"))
    device = f"{os.cpu_count()} CPUs"
    if args.device == "cuda":
        import torch

        device = torch.cuda.get_device_name()
    print(f"Llama {args.layers}x{args.hidden} (intermediate {args.intermediate}, vocab from "
          f"{Path(args.tokenizer).name}), {args.precision}, {method}"
          + (", gradient checkpointing" if args.gradient_checkpointing else "")
          + f"; {args.records} alpaca records ({args.template}), 1 epoch, max_length "
          f"{args.max_length}; {device}", flush=True)
    print(f"  baseline: batches of {args.batch_size} records padded to the longest")
    print(f"  xft ({args.engine}): packed rows of {args.max_length}, {args.pack_batch} per step"
          + (f", {' '.join(args.xft_option)}" if args.xft_option else ""), flush=True)
    runs = {"baseline": [], "xft": []}
    with tempfile.TemporaryDirectory() as tmp:
        parameters, matmul = make_model(args, Path(tmp) / "model")
        # Model FLOPs per real token: forward 2N, backward 2N for the activations' gradients
        # and, in full fine-tuning, 2N for the weights' (N: matmul weights, head included;
        # attention scores and recomputation by checkpointing are not counted).
        flops_per_token = (6 if args.method == "full" else 4) * matmul
        print(f"  {parameters / 1e6:.1f}M parameters ({matmul / 1e6:.1f}M in matmuls)",
              flush=True)
        for round_ in range(args.rounds):
            for side in ("baseline", "xft"):
                load = load_average()
                r = run_side(side, args, Path(tmp) / "model", Path(tmp) / f"{side}{round_}")
                r["rate"], r["load"] = r["real"] / r["seconds"], (load, load_average())
                r["cpu_rate"] = r["real"] / r["cpu_seconds"]
                runs[side].append(r)
                memory = (f"peak GPU {r['peak_gpu_mib'] / 1024:.2f} GiB, MFU "
                          f"{r['rate'] * flops_per_token / (args.peak_tflops * 1e12):.1%}, "
                          if "peak_gpu_mib" in r else "")
                print(f"  round {round_ + 1} {side:8s} {r['real']} real tokens "
                      f"({r['label_tokens']} with labels) in {r['slots']} slots, "
                      f"{r['steps']} steps, {r['seconds']:.1f} s: {r['rate']:.1f} real tokens/s "
                      f"({r['cpu_seconds']:.0f} CPU s: {r['cpu_rate']:.1f} per CPU s), "
                      f"pad fraction {1 - r['real'] / r['slots']:.1%}, {memory}peak RSS "
                      f"{r['peak_rss_mib']:.0f} MiB, load avg {load:.1f} -> "
                      f"{r['load'][1]:.1f}", flush=True)
                if "loop_seconds" in r:
                    print(f"           (training loop alone {r['loop_seconds']:.1f} s: "
                          f"{r['real'] / r['loop_seconds']:.1f} real tokens/s)", flush=True)
    for i, (b, x) in enumerate(zip(runs["baseline"], runs["xft"]), 1):
        print(f"  round {i} xft / baseline: real tokens/s {x['rate'] / b['rate']:.2f}x, "
              f"real tokens per CPU s {x['cpu_rate'] / b['cpu_rate']:.2f}x, "
              f"over the training loop alone {loop_rate(x) / loop_rate(b):.2f}x, "
              f"peak RSS {x['peak_rss_mib'] / b['peak_rss_mib']:.2f}x"
              + (f", peak GPU memory {x['peak_gpu_mib'] / b['peak_gpu_mib']:.2f}x"
                 if "peak_gpu_mib" in x else ""))
    if args.rounds > 1:
        for key, unit in (("rate", "real tokens/s"), ("cpu_rate", "real tokens per CPU s")):
            best = {side: max(r[key] for r in rs) for side, rs in runs.items()}
            print(f"  best of {args.rounds}: baseline {best['baseline']:.1f}, xft "
                  f"{best['xft']:.1f} {unit}: {best['xft'] / best['baseline']:.2f}x")


if __name__ == "__main__":
    main()
