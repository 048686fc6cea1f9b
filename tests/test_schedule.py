"""Learning-rate schedules: transformers' curves, the same on both engines."""

import math

import pytest
from conftest import DEMO_CONFIG, read_metrics

from xft.config import load_config
from xft.engine.schedule import lr_lambda
from xft.engine.train import train
from xft.errors import ConfigError

TOTAL, WARMUP = 37, 4


def factors(options, total=TOTAL, warmup=WARMUP, lr=1e-3):
    _, exp = load_config(DEMO_CONFIG, options)
    factor = lr_lambda(exp.train, total, warmup, lr)
    return [factor(step) for step in range(total + 1)]


def previous_curve(step, kind):
    """The curve xft wrote by hand before it used transformers' (its formula, kept as the
    reference that the old three schedules did not change)."""
    if step < WARMUP:
        return step / max(1, WARMUP)
    if kind == "constant":
        return 1.0
    progress = (step - WARMUP) / max(1, TOTAL - WARMUP)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_the_previous_curves_are_unchanged(kind):
    got = factors({"train.lr_scheduler": kind})
    for step, value in enumerate(got):
        # transformers computes linear decay as (total - step) / (total - warmup): the same
        # number up to the last bit (1.1e-16 at step 10), so one float64 epsilon at most.
        assert abs(value - previous_curve(step, kind)) <= 2.0 ** -52, (kind, step)


def test_cosine_with_min_lr_ends_at_the_floor():
    got = factors({"train.lr_scheduler": "cosine_with_min_lr", "train.min_lr_ratio": 0.1})
    assert got[:WARMUP] == [s / WARMUP for s in range(WARMUP)] and got[WARMUP] == 1.0
    for step in range(WARMUP, TOTAL + 1):
        progress = (step - WARMUP) / (TOTAL - WARMUP)
        expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
        assert got[step] == pytest.approx(expected, abs=1e-12)


def test_warmup_stable_decay_holds_then_decays_over_its_share():
    got = factors({"train.lr_scheduler": "warmup_stable_decay", "train.decay_ratio": 0.25,
                   "train.min_lr_ratio": 0.05})
    decay = math.ceil(TOTAL * 0.25)  # 10 steps
    stable_end = TOTAL - decay
    assert got[WARMUP:stable_end] == [1.0] * (stable_end - WARMUP)
    assert all(a > b for a, b in zip(got[stable_end:TOTAL], got[stable_end + 1:TOTAL]))
    assert got[TOTAL] == pytest.approx(0.05)


def test_polynomial_follows_its_power():
    lr, end = 1e-3, 1e-5
    got = factors({"train.lr_scheduler": "polynomial", "train.lr_end": end, "train.power": 2.0},
                  lr=lr)
    for step in range(WARMUP, TOTAL + 1):
        remaining = 1 - (step - WARMUP) / (TOTAL - WARMUP)
        assert got[step] * lr == pytest.approx((lr - end) * remaining ** 2 + end, rel=1e-9)


@pytest.mark.parametrize("options, message", [
    ({"train.lr_scheduler": "cosine", "train.min_lr_ratio": 0.1},
     "'train.min_lr_ratio' applies to train.lr_scheduler 'cosine_with_min_lr' or "
     "'warmup_stable_decay'"),
    ({"train.lr_scheduler": "polynomial", "train.lr_end": 1.0}, "must be below 'optim.lr'"),
    ({"train.lr_scheduler": "warmup_stable_decay", "train.decay_ratio": 0.0},
     "'train.decay_ratio' must be > 0"),
    ({"train.lr_scheduler": "warmup_stable"}, "did you mean 'warmup_stable_decay'"),
])
def test_schedule_options_are_checked(options, message):
    with pytest.raises(ConfigError) as error:
        load_config(DEMO_CONFIG, options)
    assert message in str(error.value)


@pytest.mark.slow
def test_both_engines_follow_the_schedule(tmp_path):
    options = {"train.max_steps": 12, "train.log_interval": 1, "train.warmup_ratio": 0.2,
               "train.lr_scheduler": "warmup_stable_decay", "train.decay_ratio": 0.5,
               "train.min_lr_ratio": 0.1, "optim.lr": 1e-3}
    logged = {}
    for engine in ("mmengine", "hf"):
        train(DEMO_CONFIG, work_dir=tmp_path / engine, cfg_options=options, engine=engine)
        logged[engine] = [r["lr"] for r in read_metrics(tmp_path / engine) if "lr" in r]
    _, exp = load_config(DEMO_CONFIG, options)
    factor = lr_lambda(exp.train, 12, math.ceil(12 * 0.2), 1e-3)
    # The lr logged for step s (1-based) is the one its update used: the factor at s - 1.
    expected = [1e-3 * factor(step) for step in range(12)]
    for engine, values in logged.items():
        assert values == pytest.approx(expected, rel=1e-9, abs=1e-15), engine
