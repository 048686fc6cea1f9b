"""xft.model.preference_loss against TRL 1.16's own loss code, on the same tensors.

TRL keeps its losses inside trainer methods. Those methods are called here unbound, on a
namespace that holds exactly the attributes they read, with a stand-in model whose forward
returns given per-token log-probs (TRL's fused-LM-head output): TRL's code then computes the
loss of chosen tensors, one pair per call, so its batch mean is the per-example loss.
Tolerance: fp32, 1e-5.
"""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from xft.model import preference_loss as pl

trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
from trl.experimental.cpo.cpo_trainer import CPOTrainer  # noqa: E402
from trl.experimental.orpo.orpo_trainer import ORPOTrainer  # noqa: E402
from trl.trainer.kto_trainer import KTOTrainer  # noqa: E402
from trl.trainer.reward_trainer import RewardTrainer  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)
ACCELERATOR = SimpleNamespace(device=torch.device("cpu"), gather=lambda x: x,
                              gather_for_metrics=lambda x: x, unwrap_model=lambda m: m)


def random_pairs(n=6, seed=0):
    """Per-token log-probs of n chosen and rejected replies of varied lengths, and references."""
    g = torch.Generator().manual_seed(seed)
    def replies():
        return [-torch.rand(int(k), generator=g) * 3
                for k in torch.randint(1, 9, (n,), generator=g)]

    chosen, rejected = replies(), replies()
    ref_c = torch.stack([t.sum() for t in chosen]) + torch.randn(n, generator=g)
    ref_r = torch.stack([t.sum() for t in rejected]) + torch.randn(n, generator=g)
    return chosen, rejected, ref_c, ref_r


def sums(tokens):
    return torch.stack([t.sum() for t in tokens]), torch.tensor([len(t) for t in tokens])


class FusedOutputs(torch.nn.Module):
    """Stands in for a model with TRL's fused LM head: returns the given per-token log-probs."""

    def __init__(self, rows):
        super().__init__()
        width = max(len(r) for r in rows) + 1  # one prompt token before each reply
        self.log_probs = torch.zeros(len(rows), width)
        self.mask = torch.zeros(len(rows), width + 1, dtype=torch.long)
        for i, row in enumerate(rows):
            self.log_probs[i, :len(row)] = row
            self.mask[i, 1:len(row) + 1] = 1

    def forward(self, **kwargs):
        zeros = torch.zeros_like(self.log_probs)
        return SimpleNamespace(log_probs=self.log_probs, entropy=zeros, mean_logits=zeros,
                               is_top1=zeros.bool())

    def inputs(self):
        ones = torch.ones_like(self.mask)
        return {"input_ids": ones, "attention_mask": ones, "completion_mask": self.mask}


def trainer_namespace(model, **attrs):
    return SimpleNamespace(model=model.train(), accelerator=ACCELERATOR, aux_loss_enabled=False,
                           _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
                           _total_train_tokens=0, _tp_size=1, **attrs)


def trl_dpo_example(chosen, rejected, ref_c, ref_r, loss_types, beta, loss_weights=None,
                    label_smoothing=0.0):
    """DPOTrainer._compute_loss on one pair with precomputed reference log-probs."""
    model = FusedOutputs([chosen, rejected])
    ns = trainer_namespace(model, ld_alpha=None, precompute_ref_logps=True,
                           f_divergence_type="reverse_kl", loss_types=loss_types,
                           loss_weights=loss_weights or [1.0] * len(loss_types), beta=beta,
                           label_smoothing=label_smoothing, use_weighting=False,
                           args=SimpleNamespace(discopop_tau=0.05))
    inputs = dict(model.inputs(), ref_chosen_logps=ref_c[None], ref_rejected_logps=ref_r[None])
    loss = trl_dpo.DPOTrainer._compute_loss(ns, model, inputs, False)
    metrics = {k: v[-1] for k, v in ns._metrics["train"].items()}
    return loss, metrics


@pytest.mark.parametrize("loss_type, label_smoothing", [("sigmoid", 0.0), ("robust", 0.2),
                                                        ("hinge", 0.0), ("ipo", 0.0)])
def test_dpo_losses_equal_trl(loss_type, label_smoothing):
    chosen, rejected, ref_c, ref_r = random_pairs()
    (c, nc), (r, nr) = sums(chosen), sums(rejected)
    beta = 0.3
    losses, c_rewards, r_rewards = pl.dpo_losses(c, r, ref_c, ref_r, beta, loss_type,
                                                 label_smoothing, nc, nr)
    for i in range(len(chosen)):
        loss, metrics = trl_dpo_example(chosen[i], rejected[i], ref_c[i], ref_r[i], [loss_type],
                                        beta, label_smoothing=label_smoothing)
        torch.testing.assert_close(losses[i], loss, **TOL)
        assert metrics["rewards/chosen"] == pytest.approx(float(c_rewards[i]), abs=1e-5)
        assert metrics["rewards/rejected"] == pytest.approx(float(r_rewards[i]), abs=1e-5)
        assert metrics["logps/chosen"] == pytest.approx(float(c[i]), abs=1e-5)


def test_dpo_label_smoothing_equals_trl_conservative_sigmoid():
    """cDPO's smoothed sigmoid: TRL 1.16 keeps it in CPO's 'sigmoid' loss, applied here to the
    log-ratios (DPO's margin), and in DPO's 'aot' loss, which at one pair is the same."""
    chosen, rejected, ref_c, ref_r = random_pairs()
    (c, _), (r, _) = sums(chosen), sums(rejected)
    beta, eps = 0.5, 0.15
    losses, _, _ = pl.dpo_losses(c, r, ref_c, ref_r, beta, "sigmoid", eps)
    cpo = SimpleNamespace(alpha=0.0, loss_type="sigmoid", beta=beta, label_smoothing=eps,
                          simpo_gamma=0.0, accelerator=ACCELERATOR)
    want, _, _ = CPOTrainer.cpo_loss(cpo, c - ref_c, r - ref_r)
    torch.testing.assert_close(losses, want, **TOL)
    for i in range(len(chosen)):
        loss, _ = trl_dpo_example(chosen[i], rejected[i], ref_c[i], ref_r[i], ["aot"], beta,
                                  label_smoothing=eps)
        torch.testing.assert_close(losses[i], loss, **TOL)


def test_rpo_sft_term_equals_trl():
    chosen, rejected, ref_c, ref_r = random_pairs(seed=1)
    (c, nc), (r, nr) = sums(chosen), sums(rejected)
    beta, alpha = 0.1, 0.7
    dpo, _, _ = pl.dpo_losses(c, r, ref_c, ref_r, beta)
    losses = dpo + alpha * pl.sft_nll(c, nc)
    for i in range(len(chosen)):
        loss, _ = trl_dpo_example(chosen[i], rejected[i], ref_c[i], ref_r[i], ["sigmoid", "sft"],
                                  beta, loss_weights=[1.0, alpha])
        torch.testing.assert_close(losses[i], loss, **TOL)


def reference_free_example(trainer_cls, ns, chosen, rejected):
    """get_batch_loss_metrics of CPO/ORPO on one pair, with concatenated_forward answering the
    mean token log-probs (both average them for SimPO and ORPO) and the chosen reply's NLL."""
    c_avg, r_avg = chosen.mean()[None], rejected.mean()[None]
    logits = torch.zeros(1, 2, 3)
    ns.concatenated_forward = lambda model, batch: (c_avg, r_avg, logits, logits, -c_avg[0])
    ns.accelerator = ACCELERATOR
    ns.aux_loss_enabled = False
    return trainer_cls.get_batch_loss_metrics(ns, None, {})


def test_simpo_equals_trl():
    chosen, rejected, _, _ = random_pairs(seed=2)
    (c, nc), (r, nr) = sums(chosen), sums(rejected)
    beta, gamma = 2.0, 0.5
    losses, c_rewards, r_rewards = pl.simpo_losses(c, r, nc, nr, beta, gamma)
    for i in range(len(chosen)):
        ns = SimpleNamespace(alpha=0.0, loss_type="simpo", beta=beta, simpo_gamma=gamma,
                             label_smoothing=0.0, cpo_alpha=0.0)
        ns.cpo_loss = lambda c_, r_, ns=ns: CPOTrainer.cpo_loss(ns, c_, r_)
        loss, metrics = reference_free_example(CPOTrainer, ns, chosen[i], rejected[i])
        torch.testing.assert_close(losses[i], loss, **TOL)
        assert metrics["rewards/chosen"] == pytest.approx(float(c_rewards[i]), abs=1e-5)
        assert metrics["rewards/rejected"] == pytest.approx(float(r_rewards[i]), abs=1e-5)


def test_orpo_equals_trl():
    chosen, rejected, _, _ = random_pairs(seed=3)
    (c, nc), (r, nr) = sums(chosen), sums(rejected)
    beta = 0.25
    losses, c_rewards, r_rewards = pl.orpo_losses(c, r, nc, nr, beta)
    for i in range(len(chosen)):
        ns = SimpleNamespace(beta=beta)
        ns.odds_ratio_loss = lambda c_, r_, ns=ns: ORPOTrainer.odds_ratio_loss(ns, c_, r_)
        loss, metrics = reference_free_example(ORPOTrainer, ns, chosen[i], rejected[i])
        torch.testing.assert_close(losses[i], loss, **TOL)
        assert metrics["rewards/chosen"] == pytest.approx(float(c_rewards[i]), abs=1e-5)
        assert metrics["rewards/rejected"] == pytest.approx(float(r_rewards[i]), abs=1e-5)


def test_orpo_log1mexp_is_precise_near_zero():
    # log-probs close to 0 (a near-certain reply) must not produce inf/nan.
    c = torch.tensor([-1e-6, -3.0]), torch.tensor([1, 1])
    losses, _, _ = pl.orpo_losses(c[0], torch.tensor([-2.0, -1e-7]), c[1], c[1], 0.1)
    assert torch.isfinite(losses).all()


@pytest.mark.parametrize("desirable", [True, False])
def test_kto_equals_trl(desirable):
    replies, _, ref, _ = random_pairs(seed=4)
    logps, _ = sums(replies)
    kl_logps, ref_kl_logps = torch.tensor([-5.0, -7.0]), torch.tensor([-6.0, -6.5])
    kl = (kl_logps - ref_kl_logps).mean().clamp(min=0)
    beta, wd, wu = 0.2, 1.3, 0.8
    labels = torch.full((len(replies),), desirable)
    losses, rewards = pl.kto_losses(logps, ref, labels, kl, beta, wd, wu)
    for i in range(len(replies)):
        model = FusedOutputs([replies[i]])
        ns = trainer_namespace(model, calculate_KL=True, precompute_ref_logps=True,
                               loss_type="kto", beta=beta, desirable_weight=wd,
                               undesirable_weight=wu)
        ns._compute_kl_logps = lambda model, batch: kl_logps
        batch = dict(model.inputs(), label=torch.tensor([desirable]), ref_logps=ref[i][None],
                     ref_KL_logps=ref_kl_logps)
        loss = KTOTrainer._compute_loss(ns, model, batch, False)
        torch.testing.assert_close(losses[i], loss, **TOL)
        side = "chosen" if desirable else "rejected"
        assert ns._metrics["train"][f"rewards/{side}"][-1] == pytest.approx(float(rewards[i]),
                                                                           abs=1e-5)


@pytest.mark.parametrize("with_margin", [False, True])
def test_bradley_terry_equals_trl_reward_trainer(with_margin):
    g = torch.Generator().manual_seed(5)
    scores_c, scores_r, margins = (torch.randn(6, generator=g) for _ in range(3))
    losses = pl.bradley_terry_losses(scores_c, scores_r, margins if with_margin else None)
    for i in range(6):
        logits = torch.stack([scores_c[i], scores_r[i]])[:, None]
        model = torch.nn.Module()
        model.forward = lambda **kw: SimpleNamespace(logits=logits)
        ns = trainer_namespace(model, args=SimpleNamespace(center_rewards_coefficient=None))
        inputs = {"input_ids": torch.ones(2, 3, dtype=torch.long),
                  "attention_mask": torch.ones(2, 3, dtype=torch.long)}
        if with_margin:
            inputs["margin"] = margins[i][None]
        loss = RewardTrainer.compute_loss(ns, model, inputs)
        torch.testing.assert_close(losses[i], loss, **TOL)


def test_pair_metrics_are_sums_named_like_trl():
    chosen, rejected, ref_c, ref_r = random_pairs()
    (c, _), (r, _) = sums(chosen), sums(rejected)
    _, c_rewards, r_rewards = pl.dpo_losses(c, r, ref_c, ref_r, 0.1)
    metrics = pl.pair_metrics(c_rewards, r_rewards, c, r)
    n = len(chosen)
    assert float(metrics["rewards/accuracies"]) == float((c_rewards > r_rewards).sum())
    assert float(metrics["rewards/margins"]) / n == pytest.approx(
        float((c_rewards - r_rewards).mean()), abs=1e-6)
    assert set(metrics) == {"rewards/chosen", "rewards/rejected", "rewards/accuracies",
                            "rewards/margins", "logps/chosen", "logps/rejected"}
