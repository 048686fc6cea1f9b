"""GRPO's advantages and loss equal TRL's GRPOTrainer on the same tensors (fp32, 1e-5).

TRL computes them inside its trainer, not as separate functions, so a minimal
GRPOTrainer on the tiny model is driven directly: `_generate_and_score_completions`
with reward functions that return fixed values (advantages), and `_compute_loss` on
fixed prompts, completions, old and reference log-probs (loss, KL, entropy, clip
fractions and gradients). xft computes the same from its own log-probs
(xft.rl.logprobs) and pure functions (xft.rl.grpo).
"""

import math

import pytest
import torch
from conftest import REPO

from xft.rl.grpo import (clipped_token_loss, group_advantages, masked_mean, nanstd,
                         reduce_loss)
from xft.rl.logprobs import completion_logprobs

trl = pytest.importorskip("trl")
TINY = REPO / "xft" / "assets" / "tiny-llama"
TEMPERATURE = 0.7
MAX_NEW = 6


def _trainer(tmp_path, reward_funcs, **options):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(TINY)
    model = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)
    defaults = dict(per_device_train_batch_size=6, num_generations=3, max_completion_length=MAX_NEW,
                    beta=0.0, temperature=TEMPERATURE, report_to=[], use_cpu=True, bf16=False)
    args = GRPOConfig(output_dir=str(tmp_path), **{**defaults, **options})
    return GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args,
                       train_dataset=Dataset.from_list([{"prompt": "hi"}] * 6),
                       processing_class=tokenizer)


REWARDS = [[1.0, 0.0, 2.0, None, 0.5, 0.25, 3.0, 3.0, 3.0],  # one unscored, one constant group
           [0.5, None, 1.0, None, 0.0, 2.0, 1.0, 0.0, 1.0]]


@pytest.mark.parametrize("scale", ["group", "none", "batch"])
def test_rewards_combined_and_group_advantages_equal_trls(tmp_path, scale):
    from xft.rl.rewards import build_rewards, score

    weights = [1.0, 0.5]

    def trl_reward(index):
        def reward(completions, **kwargs):
            return REWARDS[index]
        reward.__name__ = f"fixed{index}"
        return reward

    def xft_reward(index):
        def reward(prompt, completion, i, **fields):
            return REWARDS[index][i]
        reward.__name__ = f"fixed{index}"
        return reward

    trainer = _trainer(tmp_path, [trl_reward(0), trl_reward(1)], scale_rewards=scale,
                       reward_weights=weights, per_device_train_batch_size=9,
                       num_generations=3)
    batch = [{"prompt": p} for p in ("a", "b", "c") for _ in range(3)]
    expected = trainer._generate_and_score_completions(batch)["advantages"]

    rewards = build_rewards([dict(type=xft_reward(k), weight=w) for k, w in enumerate(weights)])
    total, _ = score(rewards, ["p"] * 9, ["c"] * 9, [{"i": i} for i in range(9)])
    torch.testing.assert_close(group_advantages(total, 3, scale), expected, rtol=0, atol=1e-5)


def test_nanstd_is_bessel_corrected_and_ignores_nans():
    values = torch.tensor([[1.0, 3.0, math.nan], [2.0, math.nan, math.nan]])
    torch.testing.assert_close(nanstd(values, dim=1)[0], torch.tensor([1.0, 3.0]).std())
    assert nanstd(values, dim=1)[1].isnan()


def _fixed_inputs(model):
    """Prompts (one left-padded), completions of several lengths, and old / reference
    log-probs near the model's own so that ratios fall on both sides of the clip range."""
    g = torch.Generator().manual_seed(0)
    B, P = 6, 5
    prompt_ids = torch.randint(3, 600, (B, P), generator=g)
    prompt_mask = torch.ones(B, P, dtype=torch.long)
    prompt_mask[1, :2] = 0
    prompt_ids[1, :2] = 0
    completion_ids = torch.randint(3, 600, (B, MAX_NEW), generator=g)
    lengths = torch.tensor([6, 4, 2, 5, 1, 6])
    completion_mask = (torch.arange(MAX_NEW)[None] < lengths[:, None]).long()
    with torch.no_grad():
        logps, _ = completion_logprobs(model, prompt_ids, prompt_mask, completion_ids,
                                       completion_mask, TEMPERATURE)
    old = logps + 1.2 * (torch.rand(B, MAX_NEW, generator=g) - 0.5)
    ref = logps + 0.5 * torch.randn(B, MAX_NEW, generator=g)
    return dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                completion_mask=completion_mask, old_per_token_logps=old,
                ref_per_token_logps=ref, num_items_in_batch=completion_mask.sum().float())


TRL_LOSS_TYPES = {"grpo": "sequence", "bnpo": "token", "dapo": "token", "dr_grpo": "constant"}


@pytest.mark.parametrize("loss_type,beta,kl_correction,token_advantages", [
    ("grpo", 0.04, True, False), ("grpo", 0.04, False, False), ("grpo", 0.0, True, False),
    ("bnpo", 0.04, True, False), ("dapo", 0.1, False, False), ("dr_grpo", 0.04, True, False),
    ("bnpo", 0.0, True, True)])
def test_loss_metrics_and_gradients_equal_trls(tmp_path, loss_type, beta, kl_correction,
                                               token_advantages):
    trainer = _trainer(tmp_path, [lambda completions, **k: [0.0] * len(completions)],
                       loss_type=loss_type, beta=beta, epsilon=0.2, epsilon_high=0.28,
                       use_bias_correction_kl=kl_correction)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    inputs = _fixed_inputs(trainer.model)
    g = torch.Generator().manual_seed(3 if token_advantages else 2)
    shape = inputs["completion_ids"].shape if token_advantages else inputs["completion_ids"].shape[:1]
    inputs["advantages"] = torch.randn(shape, generator=g)

    # xft, on a copy of the same weights (TRL wraps its model's forward).
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32).train()
    mask = inputs["completion_mask"]
    logps, entropy = completion_logprobs(model, inputs["prompt_ids"], inputs["prompt_mask"],
                                         inputs["completion_ids"], mask, TEMPERATURE,
                                         with_entropy=True)
    terms = clipped_token_loss(logps, inputs["old_per_token_logps"], inputs["advantages"],
                               0.2, 0.28, beta, inputs["ref_per_token_logps"], kl_correction)
    loss_sum, count = reduce_loss(terms.loss, mask, TRL_LOSS_TYPES[loss_type], MAX_NEW)
    ours = loss_sum / count
    ours.backward()

    expected = trainer._compute_loss(trainer.model, inputs)
    expected.backward()
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    for (name, p), (_, q) in zip(model.named_parameters(), trainer.model.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert masked_mean(entropy, mask).item() == pytest.approx(metrics["entropy"], abs=1e-5)
    assert masked_mean(terms.clipped_low.float(), mask).item() == \
        pytest.approx(metrics["clip_ratio/low_mean"], abs=1e-6)
    assert masked_mean(terms.clipped_high.float(), mask).item() == \
        pytest.approx(metrics["clip_ratio/high_mean"], abs=1e-6)
    if beta:
        assert masked_mean(terms.kl, mask).item() == pytest.approx(metrics["kl"], abs=1e-5)
    else:
        assert terms.kl is None and "kl" not in metrics
    # The fixed inputs exercise both clip regions, so the comparison covers them.
    assert metrics["clip_ratio/low_mean"] > 0 and metrics["clip_ratio/high_mean"] > 0


def test_reduce_loss_normalisations_by_hand():
    token_loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    s, c = reduce_loss(token_loss, mask, "sequence")
    assert (s / c).item() == pytest.approx((2.0 + 4.0) / 2)
    s, c = reduce_loss(token_loss, mask, "token")
    assert (s / c).item() == pytest.approx(10.0 / 4)
    s, c = reduce_loss(token_loss, mask, "constant", max_new_tokens=5)
    assert (s / c).item() == pytest.approx(10.0 / 10)
    with pytest.raises(ValueError, match="normalization"):
        reduce_loss(token_loss, mask, "mean")
