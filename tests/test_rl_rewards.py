"""Reward functions: the shipped ones, functions from the config, weights, None, errors, metrics."""

import math

import pytest
import torch

from xft.errors import ConfigError, XftError
from xft.rl.rewards import build_rewards, reward_metrics, score


def _score(specs, completions, records=None):
    rewards = build_rewards(specs)
    records = records or [{} for _ in completions]
    return rewards, *score(rewards, ["q"] * len(completions), completions, records)


def test_exact_answer_compares_the_last_number_with_the_reference():
    _, total, _ = _score([dict(type="exact_answer")],
                         ["12", "The sum is 12.", "3 + 9 = 12.0", "12 or 13", "twelve", "-12"],
                         [{"answer": "12"}] * 5 + [{"answer": -12}])
    assert total.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    with pytest.raises(XftError, match="no field 'answer'.*'solution'"):
        _score([dict(type="exact_answer")], ["1"], [{"solution": "1"}])
    with pytest.raises(XftError, match="not a number"):
        _score([dict(type="exact_answer")], ["1"], [{"answer": "one"}])


def test_format_and_length_penalty():
    _, total, _ = _score([dict(type="format", pattern=r"\d+")], ["42", " 42\n", "42!", "x"])
    assert total.tolist() == [1.0, 1.0, 0.0, 0.0]
    _, total, _ = _score([dict(type="format", pattern=r"\d+", full=False)], ["a 4 b", "ab"])
    assert total.tolist() == [1.0, 0.0]
    _, total, _ = _score([dict(type="length_penalty", max_chars=4)], ["abc", "abcdef"])
    assert total.tolist() == [0.0, -0.5]
    with pytest.raises(ConfigError, match="regular expression"):
        build_rewards([dict(type="format", pattern="(")])


def test_config_functions_weights_none_and_metrics():
    def shouts(prompt, completion, **fields):
        return None if fields.get("skip") else float(completion.isupper())

    rewards, total, per_function = _score(
        [dict(type=shouts, weight=2.0), dict(type="format", pattern="[A-Z]+", weight=0.5,
                                            name="caps")],
        ["ABC", "abc", "ABC"], [{}, {}, {"skip": True}])
    assert [r.name for r in rewards] == ["shouts", "caps"]
    assert total.tolist() == [2.5, 0.0, 0.5]
    assert per_function[2, 0].isnan()
    metrics = reward_metrics(rewards, total, per_function)
    assert metrics["reward/shouts/mean"] == pytest.approx(0.5)  # the two scored completions
    assert metrics["reward/caps/mean"] == pytest.approx(2 / 3)
    assert metrics["reward/total/std"] == pytest.approx(torch.tensor([2.5, 0.0, 0.5]).std().item())

    def never(prompt, completion, **fields):
        return None

    _, total, _ = _score([dict(type=never)], ["a"])
    assert math.isnan(total[0])


def test_bad_reward_configs_and_results_fail_clearly():
    with pytest.raises(ConfigError, match="did you mean 'exact_answer'"):
        build_rewards([dict(type="exact_anwser")])
    with pytest.raises(ConfigError, match="non-empty list"):
        build_rewards([])
    with pytest.raises(ConfigError, match="weight"):
        build_rewards([dict(type="format", pattern="x", weight="high")])
    with pytest.raises(ConfigError, match="takes no options"):
        build_rewards([dict(type=lambda p, c, **f: 1.0, scale=2)])
    with pytest.raises(ConfigError, match="two rewards are named 'format'"):
        build_rewards([dict(type="format", pattern="a"), dict(type="format", pattern="b")])
    with pytest.raises(XftError, match="must return a number"):
        _score([dict(type=lambda p, c, **f: "1", name="text")], ["a"])
    with pytest.raises(XftError, match="reward 'boom' failed on completion 0.*ZeroDivision"):
        _score([dict(type=lambda p, c, **f: 1 / 0, name="boom")], ["a"])
