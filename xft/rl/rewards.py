"""Rewards: what a completion is worth, from Python functions and trained reward models.

A reward function has this signature (docs/rl.md):

    def my_reward(prompt: str, completion: str, **fields) -> float | None

`prompt` is the content of the prompt's last user message, `completion` the
generated text with the template's stop text cut (what `xft chat` would show),
and `fields` the record's fields (e.g. a reference `answer`) plus `messages`,
the whole prompt conversation. Accept `**fields` so records with more fields
still work. Return None where the function does not apply: that completion is
left out of the function's mean, and a completion no function scores gets no
advantage (as in TRL).

A config lists rewards with weights; the reward of a completion is the weighted
sum of the functions that scored it:

    rewards=[dict(type='exact_answer', field='answer', weight=1.0),
             dict(type='format', pattern=r'^\\d+$', weight=0.5),
             dict(type=my_reward, weight=0.2)]      # defined in the config file

`type` is a shipped name (REWARD_FUNCTIONS: its other keys are its options), a
function, or 'reward_model' (xft.rl.reward_model: `path` of a trained reward model,
optional `template`, `batch_size`, `dtype`), scored a batch at a time. Each gets
metrics `reward/NAME/mean` and `reward/NAME/std`.
"""

import math
import re
from dataclasses import dataclass
from typing import Callable, List

import torch

from xft.errors import ConfigError, XftError, did_you_mean
from xft.rl.reward_model import RewardModelScorer

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def format_reward(pattern, full=True):
    """1.0 when the completion matches `pattern` (the whole of it, stripped, unless
    full=False: anywhere in it), else 0.0."""
    try:
        regex = re.compile(pattern, re.DOTALL)
    except (re.error, TypeError) as e:
        raise ConfigError(f"format reward: 'pattern' is not a valid regular expression: {e}") \
            from None
    match = regex.fullmatch if full else regex.search

    def format_(prompt, completion, **fields):
        return 1.0 if match(completion.strip()) else 0.0

    return format_


def exact_answer_reward(field="answer"):
    """1.0 when the last number in the completion equals the record's `field` as a number
    (arithmetic and maths answers: '12', '-3', '2.50' == '2.5'), else 0.0."""

    def exact_answer(prompt, completion, **fields):
        if field not in fields:
            raise XftError(f"exact_answer reward: the record has no field '{field}' "
                           f"(its fields: {sorted(k for k in fields if k != 'messages')})")
        expected = _number(str(fields[field]))
        if expected is None:
            raise XftError(f"exact_answer reward: field '{field}' is not a number: "
                           f"{fields[field]!r}")
        numbers = NUMBER.findall(completion)
        return 1.0 if numbers and _number(numbers[-1]) == expected else 0.0

    return exact_answer


def _number(text):
    found = NUMBER.fullmatch(text.strip())
    return float(found.group()) if found else None


def length_penalty(max_chars):
    """0 up to `max_chars` characters, then -(extra characters / max_chars): a push
    towards short answers that does not reward saying nothing."""
    if not isinstance(max_chars, int) or max_chars < 1:
        raise ConfigError(f"length_penalty: 'max_chars' must be a positive integer, "
                          f"got {max_chars!r}")

    def length_penalty_(prompt, completion, **fields):
        return -max(0, len(completion) - max_chars) / max_chars

    return length_penalty_


REWARD_FUNCTIONS = {"format": format_reward, "exact_answer": exact_answer_reward,
                    "length_penalty": length_penalty}


@dataclass
class RewardFunction:
    name: str
    weight: float
    fn: Callable
    batched: bool = False  # fn(completions, records, device) -> a list (reward models)

    def score(self, prompts, completions, records, device="cpu"):
        """One float (NaN where the function returned None) per completion."""
        if self.batched:
            return self.fn(completions, records, device)
        scores = []
        for i, (prompt, completion, record) in enumerate(zip(prompts, completions, records)):
            try:
                value = self.fn(prompt, completion, **record)
            except XftError:
                raise
            except Exception as e:
                raise XftError(f"reward '{self.name}' failed on completion {i} "
                               f"({completion[:60]!r}): {type(e).__name__}: {e}") from e
            if value is None:
                value = math.nan
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise XftError(f"reward '{self.name}' must return a number or None, "
                               f"got {type(value).__name__} {value!r}")
            scores.append(float(value))
        return scores


def build_rewards(specs):
    """RewardFunctions from the config's list of dicts (see the module docstring)."""
    if not isinstance(specs, (list, tuple)) or not specs:
        raise ConfigError("'objective.rewards' must be a non-empty list of "
                          "dict(type=NAME or function, weight=..., options...)")
    rewards, names = [], set()
    for i, spec in enumerate(specs):
        where = f"objective.rewards[{i}]"
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(f"'{where}' must be a dict with a 'type' (a reward name or a "
                              f"function), got {spec!r}")
        options = dict(spec)
        kind, weight = options.pop("type"), options.pop("weight", 1.0)
        name = options.pop("name", None)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"'{where}.weight' must be a number, got {weight!r}")
        if kind == "reward_model":
            try:
                fn = RewardModelScorer(**options)
            except TypeError as e:
                raise ConfigError(f"'{where}' (reward_model): {e}") from None
            name = name or "reward_model"
        elif callable(kind):
            if options:
                raise ConfigError(f"'{where}': a reward function takes no options, got "
                                  f"{sorted(options)} (bind them in the function)")
            fn, name = kind, name or getattr(kind, "__name__", f"reward{i}")
        elif kind in REWARD_FUNCTIONS:
            try:
                fn = REWARD_FUNCTIONS[kind](**options)
            except TypeError as e:
                raise ConfigError(f"'{where}' ({kind}): {e}") from None
            name = name or kind
        else:
            names = [*REWARD_FUNCTIONS, "reward_model"]
            raise ConfigError(f"'{where}.type' must be one of {sorted(names)} or a "
                              f"function, got {kind!r}{did_you_mean(kind, names)}")
        if name in names:
            raise ConfigError(f"'{where}': two rewards are named '{name}'; give one a 'name'")
        names.add(name)
        rewards.append(RewardFunction(name, float(weight), fn,
                                      batched=isinstance(fn, RewardModelScorer)))
    return rewards


def prompt_text(messages):
    """The `prompt` a reward function gets: the content of the last user message."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def score(rewards: List[RewardFunction], prompts, completions, records, device="cpu"):
    """(total [N], per function [N, K] with NaN where a function did not score); reward
    models run on `device`.

    The total is the weighted sum of the scores that exist; NaN when none does."""
    per_function = torch.tensor([r.score(prompts, completions, records, device)
                                 for r in rewards], dtype=torch.float32)
    per_function = per_function.T.reshape(len(completions), len(rewards))
    weights = torch.tensor([r.weight for r in rewards])
    total = (per_function * weights).nansum(dim=1)
    total[per_function.isnan().all(dim=1)] = math.nan
    return total, per_function


def reward_metrics(rewards, total, per_function):
    """Mean and std (over the completions each function scored) per function and of the total."""
    metrics = {}
    columns = [(r.name, per_function[:, k]) for k, r in enumerate(rewards)] + [("total", total)]
    for name, values in columns:
        values = values[~values.isnan()]
        metrics[f"reward/{name}/mean"] = values.mean().item() if len(values) else math.nan
        metrics[f"reward/{name}/std"] = values.std().item() if len(values) > 1 else 0.0
    return metrics
