"""Per-token log-probs at labelled positions (xft.model.logprobs) against full logits and TRL.

Values and gradients must equal those of log_softmax over the model's full logits, for a head
that trains (full fine-tuning), a frozen head (LoRA), a head PEFT wraps (modules_to_save) and
a model outside PLAIN_HEAD_MODEL_TYPES; and the values must equal TRL's own fused LM head.
"""

import copy

import pytest
import torch
from test_loss import batches, tiny_model

from xft.data.encode import IGNORE_INDEX
from xft.model.logprobs import TokenLogProbs, sequence_logprobs, token_logprobs
from xft.model.loss import causal_lm_logits


def full_logits_logprobs(model, batch):
    logits = causal_lm_logits(model, batch)[:, :-1].float()
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    picked = logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return picked * keep


def weighted_grads(model, batch, fn):
    """Gradients of a per-token weighted sum, so each token's gradient is checked."""
    model.zero_grad(set_to_none=True)
    per_token = fn(model, batch)
    weights = torch.linspace(-1.0, 2.0, per_token.numel()).view_as(per_token)
    (per_token * weights).sum().backward()
    return per_token.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                if p.grad is not None}


def assert_same(model, batch, chunk_size):
    want, want_grads = weighted_grads(model, batch, full_logits_logprobs)
    got, grads = weighted_grads(
        model, batch, lambda m, b: token_logprobs(m, b, chunk_size=chunk_size))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert grads.keys() == want_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], want_grads[name], rtol=1e-4, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")


# Untied and tied heads, a head with a bias (phi), a model outside PLAIN_HEAD_MODEL_TYPES (gemma).
@pytest.mark.parametrize("kind, layout", [("llama", "padded"), ("llama", "packed"),
                                          ("qwen2", "padded"), ("phi", "padded"),
                                          ("gemma", "padded")])
def test_full_fine_tuning_equals_full_logits(kind, layout):
    assert_same(tiny_model(kind), batches()[layout], chunk_size=7)


@pytest.mark.parametrize("target_modules", [["q_proj", "v_proj"], ["q_proj", "lm_head"]])
def test_lora_equals_full_logits(target_modules):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model("llama"), LoraConfig(r=4, target_modules=target_modules,
                                                           init_lora_weights=False))
    assert_same(model, batches()["padded"], chunk_size=5)


def test_modules_to_save_head_equals_full_logits():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model("llama"),
                           LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"]))
    assert_same(model, batches()["padded"], chunk_size=5)


def test_frozen_head_gradient_equals_recomputed_one():
    torch.manual_seed(0)
    hidden = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 8, dtype=torch.float64)
    targets = torch.randint(0, 13, (11,))
    assert torch.autograd.gradcheck(
        lambda h: TokenLogProbs.apply(h, weight, None, targets, 4), (hidden,))
    weight.requires_grad_(True)
    bias = torch.randn(13, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda h, w, b: TokenLogProbs.apply(h, w, b, targets, 4), (hidden, weight, bias))


def test_sequence_logprobs_sum_rows_and_count_labels():
    model = tiny_model("llama")
    batch = batches()["padded"]
    with torch.no_grad():
        sums, counts = sequence_logprobs(model, batch)
        want = full_logits_logprobs(model, batch).sum(-1)
    torch.testing.assert_close(sums, want, rtol=1e-5, atol=1e-5)
    assert counts.tolist() == (batch["labels"][:, 1:] != IGNORE_INDEX).sum(-1).tolist()


def test_equal_trl_fused_lm_head():
    """TRL's own labels-only head (trl.trainer.utils.add_fused_lm_head) is the reference."""
    from trl.trainer.utils import add_fused_lm_head

    model = tiny_model("llama")
    reference = copy.deepcopy(model)
    add_fused_lm_head(reference)
    batch = batches()["padded"]
    with torch.no_grad():
        got = token_logprobs(model, batch, chunk_size=3)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        want = reference(**inputs, labels=batch["labels"], fused_lm_head=True,
                         use_cache=False).log_probs
    keep = batch["labels"][:, 1:] != IGNORE_INDEX
    torch.testing.assert_close(got[keep], want[keep].float(), rtol=1e-5, atol=1e-5)
