"""Reference policies (xft.model.reference) on encoded, collated preference pairs.

- a fresh LoRA adapter, disabled, scores exactly as the base model;
- continuing from an SFT adapter, that adapter (loaded frozen beside the trained one) is the
  reference: the first DPO loss is ln 2 and every margin 0, while the disabled adapter (the
  base) would not be;
- a frozen copy and precomputed log-probs give the live reference's losses;
- pairs packed into rows (both sides of a pair in one row, position_ids restarting per
  sequence) score, lose and backpropagate exactly as the same pairs padded: no token sees
  another sequence.
"""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from xft.data.collate_pairs import LabeledCollator, PackedPairCollator, PairCollator
from xft.data.encode import IGNORE_INDEX
from xft.data.encode_pairs import encode_labeled, encode_pairs
from xft.data.pack import pack_pairs
from xft.data.preference import LabeledReply, PreferencePair
from xft.data.templates import get_template
from xft.model.logprobs import sequence_logprobs
from xft.model.preference_loss import dpo_losses
from xft.model.reference import (Reference, add_reference_adapter, frozen_copy,
                                 reference_scores)
from xft.paths import resolve_path

TINY = resolve_path("xft://tiny-llama")


def msg(role, text):
    return {"role": role, "content": text, "loss": None}


PAIRS = [PreferencePair([msg("user", "Who are you?")], msg("assistant", "I am Tuna."),
                        msg("assistant", "I am a cat.")),
         PreferencePair([msg("system", "Be brief."), msg("user", "Who made you?")],
                        msg("assistant", "The xft team."), msg("assistant", "Nobody at all."))]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY)


@pytest.fixture(scope="module")
def batch(tokenizer):
    samples, _ = encode_pairs(PAIRS, get_template("chatml", tokenizer), tokenizer, 256)
    return PairCollator(tokenizer.pad_token_id)(samples)


def base_model():
    return AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)


def lora(model, init=True):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=init))


def logps(model, batch):
    return sequence_logprobs(model, batch)[0]


def dpo_step0(model, batch, reference):
    ref = reference_scores(model, batch, reference, logps)
    policy = logps(model, batch)
    losses, chosen, rejected = dpo_losses(*policy.chunk(2), *ref.chunk(2), beta=0.1)
    return losses, chosen - rejected


def test_pair_collator_rows(batch, tokenizer):
    assert batch["input_ids"].shape[0] == 4  # chosen, chosen, rejected, rejected
    first_label = (batch["labels"] != IGNORE_INDEX).float().argmax(-1)
    assert first_label[0] == first_label[2] and first_label[1] == first_label[3]  # shared prompts
    text = tokenizer.decode(batch["input_ids"][2][batch["labels"][2] != IGNORE_INDEX])
    assert text.startswith("I am a cat.")


def test_disabled_adapter_scores_as_the_base_model(batch):
    base = base_model()
    want = logps(base, batch)
    model = lora(base_model(), init=False)  # a non-zero adapter
    assert not torch.allclose(logps(model, batch), want)
    got = reference_scores(model, batch, Reference("disabled_adapter"), logps)
    torch.testing.assert_close(got, want)
    assert got.grad_fn is None


def test_sft_adapter_is_the_reference_when_continuing_from_it(batch, tmp_path):
    from peft import PeftModel

    sft = lora(base_model(), init=False)  # stands for an SFT adapter: far from the base
    sft.save_pretrained(tmp_path / "sft")
    model = PeftModel.from_pretrained(base_model(), tmp_path / "sft", is_trainable=True)
    reference = add_reference_adapter(model, tmp_path / "sft")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    losses, margins = dpo_step0(model, batch, reference)
    torch.testing.assert_close(losses, torch.full_like(losses, math.log(2)))
    torch.testing.assert_close(margins, torch.zeros_like(margins))
    # The trained adapter is still the one that trains, the reference adapter never does.
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    assert trainable and not any(".reference." in n for n in trainable)
    assert model.active_adapter == "default"
    # The base (disabled adapters) as reference: the bug this avoids.
    _, base_margins = dpo_step0(model, batch, Reference("disabled_adapter"))
    assert base_margins.abs().max() > 1e-3


def test_frozen_copy_and_precomputed_equal_the_live_reference(batch):
    torch.manual_seed(0)
    model = base_model()
    reference = frozen_copy(model)
    with torch.no_grad():  # the policy moves away from its start
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-2)
    live, _ = dpo_step0(model, batch, reference)
    ref = reference_scores(model, batch, reference, logps)
    precomputed = dict(batch, ref_logps=ref.clone())
    cached, _ = dpo_step0(model, precomputed, Reference("precomputed"))
    torch.testing.assert_close(cached, live, rtol=0, atol=0)
    assert not torch.allclose(live, torch.full_like(live, math.log(2)))
    assert all(not p.requires_grad for p in reference.module.parameters())


def test_labeled_collator_builds_mismatched_kl_rows(tokenizer):
    items = [LabeledReply(p.prompt, p.chosen, i % 2 == 0) for i, p in enumerate(PAIRS)]
    samples, _ = encode_labeled(items, get_template("chatml", tokenizer), tokenizer, 256)
    batch = LabeledCollator(tokenizer.pad_token_id)(samples)
    assert batch["desirable"].tolist() == [True, False]
    kl_text = tokenizer.decode(batch["kl_input_ids"][0][batch["kl_attention_mask"][0] == 1])
    assert "Who are you?" in kl_text and "The xft team." in kl_text


def test_packed_pairs_equal_padded_pairs(tokenizer):
    from xft.config.schema import MethodCfg
    from xft.objectives.preference import DPO

    pairs = PAIRS + [PreferencePair([msg("user", f"Count to {n}.")],
                                    msg("assistant", " ".join(map(str, range(1, n + 1)))),
                                    msg("assistant", "No."))
                     for n in (2, 5, 9)]
    samples, _ = encode_pairs(pairs, get_template("chatml", tokenizer), tokenizer, 256)
    rows, stats = pack_pairs(samples, 64, seed=0)
    assert stats.samples == len(pairs) and 1 < stats.rows < len(pairs)  # rows share pairs
    packed = PackedPairCollator(tokenizer.pad_token_id)(rows)
    padded = PairCollator(tokenizer.pad_token_id)(samples)
    assert "attention_mask" not in packed  # the position_ids restarts separate sequences
    results = {}
    for name, batch in (("packed", packed), ("padded", padded)):
        torch.manual_seed(0)
        model = lora(base_model(), init=False)
        objective = DPO()
        objective.prepare_model(model, MethodCfg(type="lora"))
        sums, tokens = sequence_logprobs(model, batch)
        out = objective.loss(model, batch)
        out.sum.backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
        # Pairs come in another order when packed: compare them sorted.
        chosen, rejected = sums.detach().chunk(2)
        order = chosen.argsort()
        results[name] = (chosen[order], rejected[order], tokens.chunk(2)[0][order],
                         objective.count(batch), out.sum.detach(),
                         {k: v.detach() for k, v in out.metrics.items()}, grads)
    (c1, r1, t1, n1, l1, m1, g1), (c2, r2, t2, n2, l2, m2, g2) = results.values()
    torch.testing.assert_close(c1, c2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r1, r2, rtol=1e-5, atol=1e-5)
    assert t1.tolist() == t2.tolist() and int(n1) == int(n2) == len(pairs)
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
    for key in m1:
        torch.testing.assert_close(m1[key], m2[key], rtol=1e-5, atol=1e-5)
    assert g1.keys() == g2.keys() and g1
    for key in g1:
        torch.testing.assert_close(g1[key], g2[key], rtol=1e-4, atol=1e-6)
