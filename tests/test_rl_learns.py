"""GRPO learns on CPU: the embedded tiny model, first SFT'd by `xft train` on toy sums whose
answers usually end with a wrong number (tools/make_arithmetic_data.py), then GRPO with the
exact-answer reward on 28 prompts raises the greedy exact-answer reward on 8 held-out prompts."""

import pytest
import torch
from conftest import run_cli

from xft.data.formats import to_conversation
from xft.data.pipeline import read_records
from xft.data.templates import get_template
from xft.rl.grpo_step import GRPOOptions, GRPOStep
from xft.rl.rewards import build_rewards, score
from xft.rl.rollout import TransformersGenerator, prompt_from_record, render_prompt
from xft.tools.chat import Sampling


def _prompts(path, template, tokenizer):
    records = []
    for record in read_records(path):
        messages = prompt_from_record(record, lambda r: to_conversation("qa", r))
        records.append({**record, "messages": messages})
    return [render_prompt(template, tokenizer, r["messages"]) for r in records], records


def _greedy_reward(model, tokenizer, template, prompts, records):
    generator = TransformersGenerator(tokenizer, template, Sampling(), max_new_tokens=6)
    rollout = generator.generate(model, prompts, seed=0)
    total, _ = score(build_rewards([dict(type="exact_answer")]), [""] * len(prompts),
                     rollout.texts, records)
    return total.mean().item()


@pytest.mark.slow
def test_grpo_raises_the_held_out_exact_answer_reward(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_cli("train", "tiny_llama_full_arithmetic_sft", "--work-dir", str(tmp_path))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    template = get_template("chatml", tokenizer)
    train_prompts, train_records = _prompts("xft://data/arithmetic_prompts.jsonl", template,
                                            tokenizer)
    held_prompts, held_records = _prompts("xft://data/arithmetic_heldout.jsonl", template,
                                          tokenizer)
    before = _greedy_reward(model, tokenizer, template, held_prompts, held_records)

    step = GRPOStep(GRPOOptions(rewards=[dict(type="exact_answer")], group_size=8,
                                max_new_tokens=6, loss_normalization="token"),
                    tokenizer, template)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = torch.Generator().manual_seed(0)
    model.train()
    for i in range(40):
        chosen = torch.randperm(len(train_prompts), generator=rng)[:8].tolist()
        batch, metrics, _ = step.rollout(model, [train_prompts[k] for k in chosen],
                                         [train_records[k] for k in chosen], seed=i)
        loss_sum, count, _ = step.loss(model, batch)
        (loss_sum / count).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = _greedy_reward(model, tokenizer, template, held_prompts, held_records)
    assert before <= 0.25 and after >= before + 0.4, (before, after)
