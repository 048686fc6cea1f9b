"""The 'grpo' and 'ppo' objectives through `xft train`: both engines log the same losses and
metrics step by step (fixed seed: the same rollouts), and a resumed run regenerates the same
rollouts and continues exactly (PPO: with its value head, two updates per rollout, rewarded
by a reward model and a reward function)."""

import json

import pytest
from conftest import REPO, make_tiny_reward_model, read_metrics, run_cli, write_config

from xft.objectives import objective_class
from xft.paths import resolve_path

CONFIG = """
_base_ = ['{configs}/_base_/models/tiny_llama.py']
method = dict(type='lora', r=8, alpha=16, dropout=0.0, target_modules='all-linear')
objective = dict(type='grpo', rewards=[dict(type='length_penalty', max_chars=4),
                                       dict(type='format', pattern=r'.*[0-9].*', weight=0.5)],
                 group_size=4, max_new_tokens=6, temperature=1.0, beta=0.04,
                 epsilon_high=0.28, loss_normalization='{norm}')
datasets = [dict(path='xft://data/arithmetic_prompts.jsonl', format='qa')]
data = dict(max_length=64)
optim = dict(lr=1e-2)
train = dict(batch_size=2, grad_accum=2, max_steps=4, lr_scheduler='constant',
             warmup_ratio=0.0, log_interval=1, save_interval=2, save_total_limit=0)
evaluation = dict(rollout_samples=16)  # every completion of a step: 2 × 2 prompts × 4
"""
PPO_CONFIG = """
_base_ = ['{configs}/_base_/models/tiny_llama.py']
method = dict(type='lora', r=8, alpha=16, dropout=0.0, target_modules='all-linear')
objective = dict(type='ppo', rewards=[dict(type='reward_model', path='{reward_model}'),
                                      dict(type='length_penalty', max_chars=4, weight=0.5)],
                 max_new_tokens=6, temperature=1.0, kl_coef=0.05, updates_per_rollout=2)
datasets = [dict(path='xft://data/arithmetic_prompts.jsonl', format='qa')]
data = dict(max_length=64)
optim = dict(lr=1e-2)
train = dict(batch_size=2, grad_accum=2, max_steps=4, lr_scheduler='constant',
             warmup_ratio=0.0, log_interval=1, save_interval=2, save_total_limit=0)
"""
THROUGHPUT = ("generation_tokens_per_s", "tokens_per_s", "elapsed", "time")


def _config(tmp_path, norm="token"):
    return write_config(tmp_path, CONFIG.format(configs=REPO / "configs", norm=norm))


def _ppo_config(tmp_path):
    reward_model = make_tiny_reward_model(tmp_path / "reward_model")
    return write_config(tmp_path, PPO_CONFIG.format(configs=REPO / "configs",
                                                    reward_model=reward_model))


def _steps(work_dir):
    return [r for r in read_metrics(work_dir) if "loss" in r and "step" in r]


def _both_engines(tmp_path, config):
    """Per-step records of `config` trained on each engine (MMEngine's, HF Trainer's)."""
    runs = []
    for engine in ("mmengine", "hf"):
        work_dir = tmp_path / engine
        run_cli("train", str(config), "--engine", engine, "--work-dir", str(work_dir))
        runs.append(_steps(work_dir))
    assert [r["step"] for r in runs[0]] == [1, 2, 3, 4]
    return runs


def _rollout_samples(work_dir):
    """chat_samples.jsonl's rollout lines, by step."""
    by_step = {}
    with open(work_dir / "chat_samples.jsonl", encoding="utf-8") as f:
        for line in f:
            sample = json.loads(line)
            if sample.get("source") == "rollout":
                by_step.setdefault(sample["step"], []).append(sample)
    return by_step


def _length_penalty(text, max_chars=4):  # the shipped length_penalty, written out
    return -max(0, len(text) - max_chars) / max_chars


def _close(a, b):
    keys = [k for k in a if isinstance(a[k], (int, float)) and not any(t in k for t in THROUGHPUT)
            and k != "lr"]
    assert keys and set(keys) <= set(b)
    for key in keys:
        assert a[key] == pytest.approx(b[key], abs=1e-4), key


def test_prompts_keep_the_reference_answer_and_render_like_chat():
    from transformers import AutoTokenizer

    from xft.data.templates import get_template
    from xft.rl.rollout import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(REPO / "xft" / "assets" / "tiny-llama")
    template = get_template("chatml", tokenizer)
    grpo = objective_class("grpo")(objective_class("grpo").Options(
        rewards=[dict(type="exact_answer")]))
    text, record = grpo.prepare([{"role": "user", "content": "2+3="},
                                 {"role": "assistant", "content": "5"}], template, None)
    samples, stats = grpo.encode([(text, record)], tokenizer, 64, "drop")
    messages = [{"role": "user", "content": "2+3="}]
    assert samples[0]["prompt_ids"] == render_prompt(template, tokenizer, messages)
    assert json.loads(bytes(samples[0]["record"]).decode()) == {"answer": "5",
                                                                "messages": messages}
    batch = grpo.collator(tokenizer.pad_token_id, False)(samples * 2)
    assert batch["records"][1]["answer"] == "5"
    _, stats = grpo.encode([(text, record)], tokenizer, 3, "drop")
    assert stats.dropped_too_long == 1


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["token", "sequence"])
def test_both_engines_log_the_same_losses_and_metrics(tmp_path, norm):
    mmengine, hf = _both_engines(tmp_path, _config(tmp_path, norm))
    for a, b in zip(mmengine, hf):
        _close(a, b)
    rewards = [r["reward/total/mean"] for r in mmengine]
    assert len(set(rewards)) > 1  # the rollouts change as the policy does
    assert all(r["kl"] >= 0 for r in mmengine) and mmengine[-1]["kl"] > 0
    # chat_samples.jsonl holds every completion of every step (rollout_samples=16), the
    # same on both engines, with the rewards the logged means were taken over.
    questions = {json.loads(line)["question"] for line in open(resolve_path(
        "xft://data/arithmetic_prompts.jsonl"))}
    samples = _rollout_samples(tmp_path / "mmengine")
    assert samples == _rollout_samples(tmp_path / "hf")
    assert sorted(samples) == [1, 2, 3, 4]
    for record in mmengine:
        step = samples[record["step"]]
        assert len(step) == 16 and {s["prompt"] for s in step} <= questions
        assert all(len({s["prompt"] for s in step[i:i + 4]}) == 1 for i in range(0, 16, 4))
        for s in step:
            assert s["rewards"]["length_penalty"] == pytest.approx(_length_penalty(s["answer"]))
            assert s["rewards"]["format"] == float(any(c.isdigit() for c in s["answer"]))
            assert s["reward"] == pytest.approx(s["rewards"]["length_penalty"]
                                                + 0.5 * s["rewards"]["format"])
        if norm == "sequence":  # micro-batches weigh alike: the logged mean is the plain mean
            mean = sum(s["reward"] for s in step) / len(step)
            assert record["reward/total/mean"] == pytest.approx(mean, abs=2e-6)


@pytest.mark.slow
def test_ppo_on_both_engines_logs_the_same_losses_and_metrics(tmp_path):
    steps, hf = _both_engines(tmp_path, _ppo_config(tmp_path))
    for a, b in zip(steps, hf):
        _close(a, b)
    # Two updates per rollout: steps 1-2 and 3-4 train on the same completions; the second
    # update of each has moved away from the sampling policy.
    assert steps[0]["reward/total/mean"] == steps[1]["reward/total/mean"]
    assert steps[1]["reward/total/mean"] != steps[2]["reward/total/mean"]
    assert steps[0]["clip/policy"] == 0 and steps[1]["clip/policy"] > 0
    assert all(r["value_loss"] > 0 and r["completion_tokens"] > 0 for r in steps)
    assert steps[2]["kl"] > 0  # the policy has left the reference (the adapter disabled)
    # Rollouts are written at the steps that generate them (1 and 3), the first four
    # (rollout_samples' default): here all of them, scored by the reward model as
    # xft.inference.reward scores them.
    from xft.inference.reward import load_reward_model

    samples = _rollout_samples(tmp_path / "mmengine")
    assert samples == _rollout_samples(tmp_path / "hf") and sorted(samples) == [1, 3]
    scorer = load_reward_model(str(tmp_path / "reward_model"))
    for step in samples.values():
        assert len(step) == 4
        scores = scorer.score([s["prompt"] for s in step], [s["answer"] for s in step]).tolist()
        for s, score in zip(step, scores):
            assert s["rewards"]["reward_model"] == pytest.approx(score, abs=1e-5)
            assert s["reward"] == pytest.approx(score + 0.5 * _length_penalty(s["answer"]),
                                                abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["mmengine", "hf"])
@pytest.mark.parametrize("objective", ["grpo", "ppo"])
def test_resume_regenerates_the_same_rollouts(tmp_path, engine, objective):
    config = _config(tmp_path) if objective == "grpo" else _ppo_config(tmp_path)
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run_cli("train", str(config), "--engine", engine, "--work-dir", str(full))
    checkpoint = full / ("iter_2.pth" if engine == "mmengine" else "checkpoint-2")
    run_cli("train", str(config), "--engine", engine, "--work-dir", str(resumed),
            "--resume", str(checkpoint))
    after = _steps(resumed)
    assert [r["step"] for r in after] == [3, 4]
    for a, b in zip(after, _steps(full)[2:]):
        _close(a, b)


@pytest.mark.slow
@pytest.mark.gpu
@pytest.mark.parametrize("objective", ["grpo", "ppo"])
def test_qlora_bf16_on_a_gpu_trains_alike_on_both_engines(tmp_path, objective):
    """On CUDA: a 4-bit policy (its disabled adapter the reference), bf16 autocast, the
    reward model on the GPU: both engines log close losses and metrics."""
    config = _config(tmp_path) if objective == "grpo" else _ppo_config(tmp_path)
    text = config.read_text().replace("train = dict(", "train = dict(mixed_precision='bf16', ")
    config.write_text(text + "\nmodel = dict(quantization=dict(bits=4))\n")
    for a, b in zip(*_both_engines(tmp_path, config)):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-2, abs=1e-3)
        assert a["reward/total/mean"] == pytest.approx(b["reward/total/mean"], abs=1e-2)
        assert a["kl"] >= 0


def test_several_updates_per_rollout_compare_with_the_rollouts_log_probs():
    """GRPO with updates_per_rollout=2 freezes the log-probs of the policy that sampled
    (a fresh no-grad forward), so the first update has ratio 1 and the second, after an
    optimizer step, does not; a save_interval between rollouts is refused."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xft.config.schema import TrainCfg
    from xft.data.templates import get_template
    from xft.errors import ConfigError
    from xft.rl.grpo_step import GRPOOptions, GRPOStep
    from xft.rl.logprobs import completion_logprobs
    from xft.rl.rollout import render_prompt

    tiny = REPO / "xft" / "assets" / "tiny-llama"
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    template = get_template("chatml", tokenizer)
    options = GRPOOptions(rewards=[dict(type="length_penalty", max_chars=3)], group_size=4,
                          max_new_tokens=6, updates_per_rollout=2)
    step = GRPOStep(options, tokenizer, template)
    prompts = [render_prompt(template, tokenizer, [{"role": "user", "content": q}])
               for q in ("2+3=", "hi")]
    batch, _, _ = step.rollout(model, prompts, [{}, {}], seed=0)
    keys = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
    with torch.no_grad():
        fresh, _ = completion_logprobs(model, *(batch[k] for k in keys))
    torch.testing.assert_close(batch["old_logps"], fresh)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ratios = []
    for _ in range(2):
        loss_sum, count, _ = step.loss(model, batch)
        with torch.no_grad():
            logps, _ = completion_logprobs(model, *(batch[k] for k in keys))
        mask = batch["completion_mask"].bool()
        ratios.append((logps - batch["old_logps"]).exp()[mask])
        (loss_sum / count).backward()
        optimizer.step()
        optimizer.zero_grad()
    torch.testing.assert_close(ratios[0], torch.ones_like(ratios[0]))
    assert (ratios[1] - 1).abs().max() > 1e-3
    grpo = objective_class("grpo")
    with pytest.raises(ConfigError, match="save_interval.*multiple.*updates_per_rollout"):
        grpo(grpo.Options(rewards=[dict(type="exact_answer")], updates_per_rollout=2),
             TrainCfg(save_interval=3))


def test_rollout_samples_are_written_for_logged_steps_only(tmp_path):
    """Which rollouts are written (a logged step among those that train them; rank 0 only),
    how many, and a score that does not exist (None from a reward function) as null."""
    import math

    from xft.inference.chat_eval import RolloutSamples

    def logged(step):
        return step % 4 == 0
    samples = RolloutSamples(tmp_path, 2, logged)
    assert not samples.due(range(1, 3)) and samples.due(range(3, 5))
    assert not RolloutSamples(tmp_path, 0, logged).due([4])
    assert not RolloutSamples(tmp_path, 2, logged, writes=False).due([4])
    completions = [{"prompt": "1+1=", "answer": a, "reward": r, "rewards": {"f": r, "g": g}}
                   for a, r, g in [("2", 1.0, math.nan), ("3", math.nan, math.nan),
                                   ("4", 0.0, 0.5)]]
    samples.write(3, completions)
    lines = [json.loads(line) for line in (tmp_path / "chat_samples.jsonl").open()]
    assert lines == [
        {"step": 3, "source": "rollout", "prompt": "1+1=", "answer": "2", "reward": 1.0,
         "rewards": {"f": 1.0, "g": None}},
        {"step": 3, "source": "rollout", "prompt": "1+1=", "answer": "3", "reward": None,
         "rewards": {"f": None, "g": None}}]
