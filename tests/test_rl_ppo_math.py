"""PPO's math against independent implementations (fp32, 1e-5).

TRL 1.16 has no PPO (its PPOTrainer was removed), so GAE and the clipped value loss
are checked against torchrl's; the clipped policy loss with per-token advantages is
checked against TRL's GRPOTrainer in test_rl_grpo_math.py (the token-advantage case).
"""

import pytest
import torch

from xft.rl.ppo import clipped_value_loss, gae, masked_whiten, token_rewards

LENGTHS = torch.tensor([7, 3, 1, 5])
MASK = (torch.arange(7)[None] < LENGTHS[:, None]).long()


def _random(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_equals_torchrls(gamma, lam):
    functional = pytest.importorskip("torchrl.objectives.value.functional")
    rewards, values = _random(0, 4, 7), _random(1, 4, 7)
    advantages, returns = gae(rewards, values, MASK, gamma, lam)

    # torchrl: one episode per row that terminates on its last token; positions past
    # it are terminated steps of zero reward and value, so nothing flows back from them.
    masked_values = (values * MASK).unsqueeze(-1)
    next_values = torch.cat([masked_values[:, 1:], torch.zeros(4, 1, 1)], dim=1)
    ends = torch.arange(7)[None] >= (LENGTHS - 1)[:, None]
    expected_adv, expected_target = functional.generalized_advantage_estimate(
        gamma, lam, masked_values, next_values, (rewards * MASK).unsqueeze(-1),
        done=ends.unsqueeze(-1), terminated=ends.unsqueeze(-1), time_dim=-2)
    on = MASK.bool()
    torch.testing.assert_close(advantages[on], expected_adv.squeeze(-1)[on], rtol=0, atol=1e-5)
    torch.testing.assert_close(returns[on], expected_target.squeeze(-1)[on], rtol=0, atol=1e-5)
    assert (advantages[~on] == 0).all() and (returns[~on] == 0).all()


@pytest.mark.parametrize("clip", [0.2, 0.05])
def test_clipped_value_loss_equals_torchrls(clip):
    ppo = pytest.importorskip("torchrl.objectives.ppo")
    from torchrl.objectives.utils import distance_loss

    old, returns = _random(2, 4, 7), _random(3, 4, 7)
    values = (old + 0.3 * _random(4, 4, 7)).requires_grad_()
    loss, clipped = clipped_value_loss(values, old, returns, clip)
    expected, _ = ppo._clip_value_loss(old, values, clip, returns,
                                       distance_loss(returns, values, "l2"), "l2")
    # torchrl's l2 is the squared error; xft's value loss is half of it (TRL's convention).
    torch.testing.assert_close(loss, 0.5 * expected, rtol=0, atol=1e-6)
    assert clipped.any() and not clipped.all()


def test_whitening_over_the_completion_tokens():
    values = _random(5, 4, 7) * 3 + 2
    selected = values[MASK.bool()]
    expected = (selected - selected.mean()) / torch.sqrt(selected.var() + 1e-8)
    whitened = masked_whiten(values, MASK)
    torch.testing.assert_close(whitened[MASK.bool()], expected, rtol=0, atol=1e-5)
    assert (whitened[~MASK.bool()] == 0).all()
    kept = masked_whiten(values, MASK, shift_mean=False)
    torch.testing.assert_close(kept[MASK.bool()], expected + selected.mean(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_token_rewards_penalise_kl_and_score_the_last_token(estimator):
    logps, ref = -_random(6, 4, 7).abs(), -_random(7, 4, 7).abs()
    scores = torch.tensor([1.0, -2.0, 0.5, 3.0])
    rewards, kl = token_rewards(scores, logps, ref, MASK, kl_coef=0.1, estimator=estimator)
    q = ref - logps
    expected_kl = -q if estimator == "k1" else q.exp() - q - 1
    torch.testing.assert_close(kl, expected_kl)
    for row, n in enumerate(LENGTHS.tolist()):
        expected = -0.1 * expected_kl[row, :n]
        expected[n - 1] += scores[row]
        torch.testing.assert_close(rewards[row, :n], expected)
        assert (rewards[row, n:] == 0).all()
