"""The run's length: `epochs` means every sample of every epoch is trained."""

from collections import Counter
from types import SimpleNamespace

import pytest

from xft.data.sampler import RunBatchSampler
from xft.engine.plan import plan_training


def train_cfg(**kw):
    base = dict(batch_size=4, grad_accum=4, epochs=2, max_steps=None, warmup_ratio=0.0)
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("samples,batch,accum,epochs,world", [
    (200, 4, 4, 2, 1),  # 50 micro-batches an epoch: rounding down trained 24 steps, 16 unseen
    (200, 16, 1, 2, 1),
    (37, 3, 5, 1, 1),
    (37, 3, 5, 3, 1),
    (101, 2, 3, 2, 2),  # two ranks
])
def test_every_sample_of_every_epoch_is_trained(samples, batch, accum, epochs, world):
    plan = plan_training(samples, train_cfg(batch_size=batch, grad_accum=accum, epochs=epochs),
                         world)
    sampler = RunBatchSampler(samples, batch, plan.total_micro_batches, seed=3,
                              world_size=world)
    seen = Counter(i for micro_batch in sampler for i in micro_batch)
    assert set(seen) == set(range(samples)) and min(seen.values()) >= epochs
    # No more than the last window's remainder comes from the next epoch.
    assert 0 <= plan.spill_micro_batches < accum
    assert plan.total_micro_batches == epochs * plan.micro_batches_per_epoch \
        + plan.spill_micro_batches
    if plan.spill_micro_batches:
        assert "next epoch's order" in plan.line()


def test_max_steps_is_exact():
    plan = plan_training(200, train_cfg(max_steps=7))
    assert plan.total_steps == 7 and plan.spill_micro_batches == 0
