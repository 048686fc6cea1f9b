"""GRPO and PPO learn on CPU: the embedded tiny model, first SFT'd by `xft train` on toy sums
whose answers usually end with a wrong number (tools/make_arithmetic_data.py), then GRPO or
PPO with the exact-answer reward on 28 prompts raises the greedy exact-answer reward on 8
held-out prompts."""

import pytest
import torch
from conftest import run_cli

from xft.data.formats import to_conversation
from xft.data.pipeline import read_records
from xft.data.templates import get_template
from xft.model.reference import frozen_copy
from xft.rl.grpo_step import GRPOOptions, GRPOStep
from xft.rl.ppo_step import PPOOptions, PPOStep, value_head_for
from xft.rl.rewards import build_rewards, score
from xft.rl.rollout import TransformersGenerator, prompt_from_record, render_prompt
from xft.inference.chat import Sampling


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


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    """(model directory, prompts and records: train, held-out) after the SFT stage."""
    from transformers import AutoTokenizer

    work_dir = tmp_path_factory.mktemp("arithmetic_sft")
    run_cli("train", "tiny_llama_full_arithmetic_sft", "--work-dir", str(work_dir))
    tokenizer = AutoTokenizer.from_pretrained(work_dir / "hf")
    template = get_template("chatml", tokenizer)
    return (work_dir / "hf", tokenizer, template,
            _prompts("xft://data/arithmetic_prompts.jsonl", template, tokenizer),
            _prompts("xft://data/arithmetic_heldout.jsonl", template, tokenizer))


def _policy(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


@pytest.mark.slow
def test_grpo_raises_the_held_out_exact_answer_reward(sft):
    path, tokenizer, template, (train_prompts, train_records), held_out = sft
    model = _policy(path)
    before = _greedy_reward(model, tokenizer, template, *held_out)

    step = GRPOStep(GRPOOptions(rewards=[dict(type="exact_answer")], group_size=8,
                                max_new_tokens=6, loss_normalization="token"),
                    tokenizer, template)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = torch.Generator().manual_seed(0)
    model.train()
    for i in range(40):
        chosen = torch.randperm(len(train_prompts), generator=rng)[:8].tolist()
        batch, _, _ = step.rollout(model, [train_prompts[k] for k in chosen],
                                   [train_records[k] for k in chosen], seed=i)
        loss_sum, count, _ = step.loss(model, batch)
        (loss_sum / count).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = _greedy_reward(model, tokenizer, template, *held_out)
    assert before <= 0.25 and after >= before + 0.4, (before, after)


def _train_ppo(step, model, prompts, records, steps):
    """`steps` PPO rollouts of 32 random prompts, two epochs each (lr 1e-3); the last
    update's metrics."""
    torch.manual_seed(0)
    value_head = value_head_for(model)
    optimizer = torch.optim.AdamW([*model.parameters(), *value_head.parameters()], lr=1e-3)
    rng = torch.Generator().manual_seed(0)
    model.train()
    for i in range(steps):
        chosen = torch.randint(len(prompts), (32,), generator=rng).tolist()
        batch, _, _ = step.rollout(model, value_head, [prompts[k] for k in chosen],
                                   [records[k] for k in chosen], seed=i)
        for _ in range(2):  # PPO epochs over the rollout batch
            loss_sum, count, metrics = step.loss(model, value_head, batch)
            (loss_sum / count).backward()
            optimizer.step()
            optimizer.zero_grad()
    return metrics


@pytest.mark.slow
def test_ppo_raises_the_held_out_exact_answer_reward(sft):
    path, tokenizer, template, (train_prompts, train_records), held_out = sft
    model = _policy(path)
    before = _greedy_reward(model, tokenizer, template, *held_out)

    step = PPOStep(PPOOptions(rewards=[dict(type="exact_answer")], max_new_tokens=6,
                              kl_coef=0.02, vf_coef=0.5), tokenizer, template,
                   reference=frozen_copy(model))
    metrics = _train_ppo(step, model, train_prompts, train_records, steps=40)
    after = _greedy_reward(model, tokenizer, template, *held_out)
    assert before <= 0.25 and after >= before + 0.4, (before, after)
    assert metrics["value_loss"] < 0.3  # the value head learned the returns
