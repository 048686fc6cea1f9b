"""Benchmark: GRPO rollout and update throughput, xft against TRL's GRPOTrainer.

Both sides run the same GRPO setting on the same model (the embedded tiny Llama
by default, or --model DIR) and the same prompts (the toy sums of the RL demo,
rendered with the tokenizer's chat template): --prompts prompts per step, each
answered --group-size times with up to --max-new-tokens tokens at temperature 1,
the exact-answer reward, β = 0, one update per rollout, AdamW at --lr, for
--steps steps after one warm-up step.

- xft: xft.rl.grpo_step.GRPOStep (generation with transformers' generate on the
  policy, then the loss) and a plain optimizer step;
- TRL: GRPOTrainer.train() (its generation is also transformers' generate), timed
  by a subclass that clocks its generation (`_generate_and_score_completions`)
  and its whole training step; the update time is the difference.

Printed per side: rollout tokens/s (completion tokens generated per second of
generation) and update tokens/s (prompt + completion tokens through forward and
backward per second of update), and the xft/TRL ratios. Each side runs in its
own subprocess; --rounds N alternates them so a change of load hits both.

    OMP_NUM_THREADS=1 python tools/bench_rl.py --steps 5
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
TINY = REPO / "xft" / "assets" / "tiny-llama"
PROMPTS = REPO / "xft" / "assets" / "data" / "arithmetic_prompts.jsonl"


def _records(n):
    records = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]
    return (records * (n // len(records) + 1))[:n]


def run_xft(args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xft.data.templates import get_template
    from xft.rl.grpo_step import GRPOOptions, GRPOStep
    from xft.rl.rollout import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).train()
    template = get_template("auto", tokenizer)
    step = GRPOStep(GRPOOptions(rewards=[dict(type="exact_answer")], group_size=args.group_size,
                                max_new_tokens=args.max_new_tokens), tokenizer, template)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    records = [{**r, "messages": [{"role": "user", "content": r["question"]}]}
               for r in _records(args.prompts * (args.steps + 1))]
    totals = {"gen_s": 0.0, "gen_tokens": 0, "update_s": 0.0, "update_tokens": 0}
    for i in range(args.steps + 1):
        chunk = records[i * args.prompts:(i + 1) * args.prompts]
        prompts = [render_prompt(template, tokenizer, r["messages"]) for r in chunk]
        started = time.perf_counter()
        batch, _, rollout = step.rollout(model, prompts, chunk, seed=i)
        generated = time.perf_counter()
        loss_sum, count, _ = step.loss(model, batch)
        (loss_sum / count).backward()
        optimizer.step()
        optimizer.zero_grad()
        done = time.perf_counter()
        if i == 0:
            continue  # warm-up
        totals["gen_s"] += generated - started
        totals["gen_tokens"] += int(rollout.completion_mask.sum())
        totals["update_s"] += done - generated
        totals["update_tokens"] += int(rollout.prompt_mask.sum() + rollout.completion_mask.sum())
    return totals


def run_trl(args):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from xft.rl.rewards import exact_answer_reward

    exact = exact_answer_reward()

    def exact_answer(completions, answer, **kwargs):
        return [exact("", c[0]["content"] if isinstance(c, list) else c, answer=a)
                for c, a in zip(completions, answer)]

    clocks = {"gen_s": 0.0, "gen_tokens": 0, "step_s": 0.0, "update_tokens": 0, "steps": 0}

    class TimedGRPOTrainer(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            started = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            if clocks["steps"] > 0:  # the first step is the warm-up
                clocks["gen_s"] += time.perf_counter() - started
                clocks["gen_tokens"] += int(out["completion_mask"].sum())
                clocks["update_tokens"] += int(out["prompt_mask"].sum()
                                               + out["completion_mask"].sum())
            return out

        def training_step(self, *a, **k):
            started = time.perf_counter()
            loss = super().training_step(*a, **k)
            if clocks["steps"] > 0:
                clocks["step_s"] += time.perf_counter() - started
            clocks["steps"] += 1
            return loss

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    records = _records(args.prompts * (args.steps + 1))
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["question"]}],
                                  "answer": r["answer"]} for r in records])
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, per_device_train_batch_size=args.prompts * args.group_size,
            num_generations=args.group_size, max_completion_length=args.max_new_tokens,
            temperature=1.0, beta=0.0, learning_rate=args.lr, lr_scheduler_type="constant",
            max_steps=args.steps + 1, report_to=[], use_cpu=True, bf16=False,
            logging_steps=1000, save_strategy="no", shuffle_dataset=False)
        TimedGRPOTrainer(model=model, reward_funcs=[exact_answer], args=config,
                         train_dataset=dataset, processing_class=tokenizer).train()
    return {"gen_s": clocks["gen_s"], "gen_tokens": clocks["gen_tokens"],
            "update_s": clocks["step_s"] - clocks["gen_s"],
            "update_tokens": clocks["update_tokens"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(TINY))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--side", choices=["xft", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        totals = (run_xft if args.side == "xft" else run_trl)(args)
        print("RESULT " + json.dumps(totals))
        return
    results = {"xft": [], "trl": []}
    for _ in range(args.rounds):
        for side in ("trl", "xft"):
            command = [sys.executable, __file__, "--side", side, "--model", args.model,
                       "--steps", str(args.steps), "--prompts", str(args.prompts),
                       "--group-size", str(args.group_size),
                       "--max-new-tokens", str(args.max_new_tokens), "--lr", str(args.lr)]
            out = subprocess.run(command, capture_output=True, text=True,
                                 env=dict(os.environ, PYTHONPATH=str(REPO)))
            line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{side} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
            totals = json.loads(line[len("RESULT "):])
            results[side].append(totals)
            print(f"{side:4s} rollout {totals['gen_tokens'] / totals['gen_s']:8.1f} tok/s   "
                  f"update {totals['update_tokens'] / totals['update_s']:8.1f} tok/s   "
                  f"({totals['gen_tokens']} generated, {totals['update_tokens']} trained)",
                  flush=True)
    for kind, key in (("rollout", "gen"), ("update", "update")):
        ratios = [(x[f"{key}_tokens"] / x[f"{key}_s"]) / (t[f"{key}_tokens"] / t[f"{key}_s"])
                  for x, t in zip(results["xft"], results["trl"])]
        print(f"xft/TRL {kind} tokens/s: " + ", ".join(f"{r:.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
