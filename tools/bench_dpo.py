"""Benchmark: DPO with LoRA, xft against TRL's DPOTrainer, same model, same pairs.

Both sides train the same randomly initialised Llama-shape model (the shape of
tools/bench_train.py: Qwen2's 151k vocabulary, 512 hidden × 8 layers, fp32, CPU)
with the same LoRA (r16, alpha 32, every linear layer) for one epoch of DPO
(sigmoid, β 0.1, reference = the adapter disabled) over the same first pairs of
LLaMA-Factory's dpo_en_demo.json, rendered by the same template (Qwen2-Instruct's
ChatML: TRL gets the official jinja from tests/fixtures, xft its `qwen2_chat`),
with --batch-size pairs per optimizer step. Pairs whose longer side exceeds
--max-length tokens are left out of both, so neither side truncates.

- trl: DPOTrainer(model, peft_config=LoraConfig(...)), its own tokenization,
  collator, concatenated forward and fused labels-only head;
- xft: an Experiment with objective dpo (format sharegpt_pairs) run through
  build_experiment and the MMEngine (or --engine hf) adapter.

Each side runs in its own subprocess, so its peak RSS (VmHWM) is its own; with
--rounds N they alternate. Printed per run: pairs/s and real (non-pad) tokens/s
over the training loop, peak RSS, the step-1 loss, and the ratios. At step 1 the
LoRA adapter is zero, so policy = reference and both losses must be ln 2.
"""

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(TOOLS))
SHARED = REPO.parent / "shared" / "data"
QWEN2_JINJA = REPO / "tests" / "fixtures" / "chat_templates" / "qwen2_chat.jinja"

from bench_train import (add_model_shape_args, apply_xft_options, cpu_seconds,  # noqa: E402
                         make_model, peak_rss_mib, require_inputs, run_side)

ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def selected_records(args, tokenizer):
    """The first --pairs records of the demo file whose longer side fits --max-length
    (measured with the official template), as LLaMA-Factory records: both sides train on
    exactly these."""
    out = []
    for record in json.loads(Path(args.data).read_text(encoding="utf-8")):
        pair = trl_pair(record)
        longest = max(len(tokenizer.apply_chat_template(pair["prompt"] + pair[side],
                                                        tokenize=True)["input_ids"])
                      for side in ("chosen", "rejected"))
        if longest <= args.max_length:
            out.append(record)
        if len(out) == args.pairs:
            return out
    return out


def trl_pair(record):
    """A LLaMA-Factory record as TRL's conversational prompt / chosen / rejected."""
    return {"prompt": [{"role": ROLES[t["from"]], "content": t["value"]}
                       for t in record["conversations"]],
            "chosen": [{"role": "assistant", "content": record["chosen"]["value"]}],
            "rejected": [{"role": "assistant", "content": record["rejected"]["value"]}]}


def load_tokenizer(args):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    tokenizer.chat_template = QWEN2_JINJA.read_text(encoding="utf-8")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class TokenCounter:
    """Wraps a collator: counts pairs and real (attention-mask) tokens of its batches."""

    def __init__(self, collate):
        self.collate, self.pairs, self.real = collate, 0, 0

    def __call__(self, samples):
        batch = self.collate(samples)
        self.pairs += len(samples)
        self.real += int(batch["attention_mask"].sum())
        return batch


def run_trl(args):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tokenizer = load_tokenizer(args)
    dataset = Dataset.from_list([trl_pair(r) for r in selected_records(args, tokenizer)])
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    config = DPOConfig(
        output_dir=args.work_dir, per_device_train_batch_size=args.batch_size,
        num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="cosine",
        warmup_steps=0, max_grad_norm=1.0, beta=0.1, loss_type=["sigmoid"],
        max_length=None, logging_steps=1, save_strategy="no", report_to="none",
        gradient_checkpointing=False,  # TRL's default is on; xft's is off
        bf16=False,  # TRL turns bf16 autocast on by default; both sides train in fp32
        disable_tqdm=True, seed=args.seed, use_cpu=True, dataloader_num_workers=0)
    peft_config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0,
                             target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=config, train_dataset=dataset,
                         processing_class=tokenizer, peft_config=peft_config)
    trainer.data_collator = counter = TokenCounter(trainer.data_collator)

    class Clock(TrainerCallback):
        def on_train_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, _, state, *__, **___):
            if state.global_step == state.max_steps:
                self.seconds = time.perf_counter() - self.start

    clock = Clock()
    trainer.add_callback(clock)
    cpu = cpu_seconds()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"loop_seconds": clock.seconds, "cpu_seconds": cpu_seconds() - cpu,
            "pairs": counter.pairs, "real": counter.real, "first_loss": losses[0],
            "steps": trainer.state.global_step}


def run_xft(args):
    from xft.config.schema import (DataCfg, DatasetCfg, Experiment, MethodCfg, ModelCfg,
                                   ObjectiveCfg, OptimCfg, TokenizerCfg, TrainCfg)
    from xft.engine.builder import build_experiment
    from xft.engine.monitor import read_metrics
    from xft.objectives.preference import DPOOptions

    pairs = Path(args.work_dir) / "pairs.json"  # the same pairs as TRL's
    pairs.parent.mkdir(parents=True, exist_ok=True)
    pairs.write_text(json.dumps(selected_records(args, load_tokenizer(args))), encoding="utf-8")
    experiment = Experiment(
        model=ModelCfg(path=args.model_dir, dtype="float32"),
        tokenizer=TokenizerCfg(path=args.tokenizer), template="qwen2_chat",
        objective=ObjectiveCfg("dpo", DPOOptions(beta=0.1)),
        datasets=[DatasetCfg(path=str(pairs), format="sharegpt_pairs")],
        data=DataCfg(max_length=args.max_length, truncation="drop", cache=False),
        method=MethodCfg(type="lora", r=args.lora_r, alpha=args.lora_alpha, dropout=0.0,
                         target_modules="all-linear"),
        optim=OptimCfg(lr=args.lr, max_grad_norm=1.0),
        train=TrainCfg(engine=args.engine, batch_size=args.batch_size, epochs=1,
                       lr_scheduler="cosine", warmup_ratio=0.0, log_interval=1,
                       save_interval=10**9),
        seed=args.seed)
    apply_xft_options(experiment, args.xft_option)
    built = build_experiment(experiment, config_text="", work_dir=args.work_dir)
    built.collator = counter = TokenCounter(built.collator)
    if args.engine == "hf":
        from xft.engine.hf_trainer import run
    else:
        from xft.engine.mmengine_run import run
    cpu = cpu_seconds()
    run(built)
    records = read_metrics(args.work_dir)
    return {"loop_seconds": records[-1]["elapsed"], "cpu_seconds": cpu_seconds() - cpu,
            "pairs": counter.pairs, "real": counter.real, "first_loss": records[0]["loss"],
            "steps": built.plan.total_steps}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "datasets/preference/dpo_en_demo.json"))
    parser.add_argument("--tokenizer", default=str(SHARED / "tokenizers/qwen2"))
    parser.add_argument("--pairs", type=int, default=32, help="pairs trained (one epoch)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per optimizer step")
    parser.add_argument("--max-length", type=int, default=512,
                        help="pairs with a longer side are left out of both")
    add_model_shape_args(parser)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--engine", choices=["mmengine", "hf"], default="mmengine")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--xft-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an xft setting for the xft side, e.g. train.loss_chunk_size=256")
    parser.add_argument("--side", choices=["trl", "xft"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # make_model (bench_train's) reads these too.
    args.kv_heads, args.tie_embeddings, args.device = None, False, "cpu"
    args.forward = sys.argv[1:]
    return args


def main():
    args = parse_args()
    if args.side:
        result = (run_trl if args.side == "trl" else run_xft)(args)
        result["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(result))
        return
    require_inputs(args, "bench_dpo")
    print(f"DPO (sigmoid, beta 0.1), Llama {args.layers}x{args.hidden} with the vocabulary of "
          f"{Path(args.tokenizer).name}, LoRA r={args.lora_r} on all linear layers, fp32 CPU; "
          f"{args.pairs} pairs of {Path(args.data).name} (longer side <= {args.max_length} "
          f"tokens), {args.batch_size} per step, 1 epoch; xft engine {args.engine}"
          + (f", {' '.join(args.xft_option)}" if args.xft_option else ""), flush=True)
    runs = {"trl": [], "xft": []}
    with tempfile.TemporaryDirectory() as tmp:
        make_model(args, Path(tmp) / "model")
        for round_ in range(args.rounds):
            for side in ("trl", "xft"):
                r = run_side(side, args, Path(tmp) / "model", Path(tmp) / f"{side}{round_}",
                             __file__)
                r["pairs_rate"] = r["pairs"] / r["loop_seconds"]
                r["token_rate"] = r["real"] / r["loop_seconds"]
                runs[side].append(r)
                print(f"  round {round_ + 1} {side:4s} {r['pairs']} pairs, {r['real']} real "
                      f"tokens, {r['steps']} steps in {r['loop_seconds']:.1f} s: "
                      f"{r['pairs_rate']:.2f} pairs/s, {r['token_rate']:.1f} tokens/s "
                      f"({r['cpu_seconds']:.0f} CPU s), peak RSS {r['peak_rss_mib']:.0f} MiB, "
                      f"step-1 loss {r['first_loss']:.6f} (ln 2 = {math.log(2):.6f})",
                      flush=True)
    for i, (t, x) in enumerate(zip(runs["trl"], runs["xft"]), 1):
        print(f"  round {i} xft / trl: pairs/s {x['pairs_rate'] / t['pairs_rate']:.2f}x, "
              f"tokens/s {x['token_rate'] / t['token_rate']:.2f}x, peak RSS "
              f"{x['peak_rss_mib'] / t['peak_rss_mib']:.2f}x, step-1 loss difference "
              f"{abs(x['first_loss'] - t['first_loss']):.2e}")


if __name__ == "__main__":
    main()
