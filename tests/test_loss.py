"""Loss at labelled positions only (xft.model.loss.CausalLMLoss) against the full-logits loss."""

import json

import pytest
import torch
import transformers
from conftest import DEMO_CONFIG

from xft.config import load_config
from xft.data.collate import PackedCollator, PadCollator
from xft.data.encode import IGNORE_INDEX
from xft.errors import ConfigError
from xft.model.loss import (CausalLMLoss, LinearCrossEntropy, LogitsWorkspace,
                            causal_lm_logits, token_loss_sum)

VOCAB = 97
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
# One config per head layout: untied head, tied embeddings, a head with a bias, an MoE model.
MODELS = {
    "llama": (transformers.LlamaConfig, dict(tie_word_embeddings=False)),
    "qwen2": (transformers.Qwen2Config, dict(tie_word_embeddings=True)),
    "gemma": (transformers.GemmaConfig, dict(head_dim=8)),
    "phi": (transformers.PhiConfig, dict()),
    "mixtral": (transformers.MixtralConfig, dict(num_local_experts=2, num_experts_per_tok=1)),
}


def tiny_model(kind, **overrides):
    config_cls, extra = MODELS[kind]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config_cls(**SMALL, **extra, **overrides))
    return model.float().train()


def samples(n=5, seed=0):
    """Samples of varied length whose labels cover only the second half (a prompt/answer split)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 6 + 3 * i
        ids = torch.randint(3, VOCAB, (length,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (length // 2) + ids[length // 2:]})
    return out


def batches():
    packed = PackedCollator(pad_token_id=0)([
        {"input_ids": a["input_ids"] + b["input_ids"], "labels":
         a["labels"] + [IGNORE_INDEX] + b["labels"][1:],
         "position_ids": list(range(len(a["input_ids"]))) + list(range(len(b["input_ids"])))}
        for a, b in zip(samples(4)[:2], samples(4)[2:])])
    padded = PadCollator(pad_token_id=0)(samples(5, seed=1))
    return {"packed": packed, "padded": padded}


def loss_and_grads(model, batch, loss_fn):
    model.zero_grad(set_to_none=True)
    loss_sum, count = loss_fn(model, batch)
    loss_sum.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss_sum.detach(), count, grads


def plain(model, batch):
    return token_loss_sum(causal_lm_logits(model, batch), batch["labels"])


def assert_same_loss_and_grads(model, batch, loss_fn):
    ref_loss, ref_count, ref_grads = loss_and_grads(model, batch, plain)
    loss, count, grads = loss_and_grads(model, batch, loss_fn)
    assert int(count) == int(ref_count) > 0
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_labels_only_loss_equals_the_full_logits_loss_full_params(kind, layout):
    model = tiny_model(kind)
    loss_fn = CausalLMLoss(at_labels_only=True, chunk_size=4)
    assert loss_fn.uses_labels_only(model)
    assert_same_loss_and_grads(model, batches()[layout], loss_fn)


@pytest.mark.slow
@pytest.mark.parametrize("modules_to_save", [None, ["lm_head"]])
@pytest.mark.parametrize("chunk_size", [3, None])
def test_labels_only_loss_equals_the_full_logits_loss_lora(modules_to_save, chunk_size):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model("llama"), LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", modules_to_save=modules_to_save,
        task_type="CAUSAL_LM"))
    # Move LoRA B off zero so that gradients reach every adapter weight.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    loss_fn = CausalLMLoss(at_labels_only=True, chunk_size=chunk_size)
    assert loss_fn.uses_labels_only(model)
    for batch in batches().values():
        assert_same_loss_and_grads(model, batch, loss_fn)


@pytest.mark.slow
def test_labels_only_loss_with_gradient_checkpointing():
    from xft.model.methods import CHECKPOINTING_KWARGS

    model = tiny_model("llama")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
    assert_same_loss_and_grads(model, batches()["packed"], CausalLMLoss(True, chunk_size=4))


@pytest.mark.parametrize("config_cls,post_processing", [
    (transformers.Gemma2Config, dict(final_logit_softcapping=3.0, head_dim=8)),
    (transformers.CohereConfig, dict(logit_scale=0.5)),
])
@pytest.mark.slow
def test_models_that_rescale_logits_take_the_plain_path(config_cls, post_processing):
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(
        config_cls(**SMALL, **post_processing)).float()
    loss_fn = CausalLMLoss(at_labels_only=True, chunk_size=4)
    assert not loss_fn.uses_labels_only(model)
    batch = batches()["padded"]
    # The head's raw output differs from these models' logits, so the fallback is needed...
    hidden = model.get_decoder()(input_ids=batch["input_ids"],
                                 attention_mask=batch["attention_mask"]).last_hidden_state
    assert not torch.allclose(model.get_output_embeddings()(hidden),
                              causal_lm_logits(model, batch), atol=1e-3)
    # ...and the loss it gives is the model's own.
    assert_same_loss_and_grads(model, batch, loss_fn)


def test_linear_cross_entropy_gradcheck_and_no_grad():
    torch.manual_seed(0)
    hidden = torch.randn(11, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(13, 6, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(13, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 13, (11,))
    assert torch.autograd.gradcheck(
        lambda h, w, b: LinearCrossEntropy.apply(h, w, b, targets, 4), (hidden, weight, bias))
    expected = torch.nn.functional.cross_entropy(hidden @ weight.T + bias, targets,
                                                 reduction="sum")
    with torch.no_grad():
        torch.testing.assert_close(LinearCrossEntropy.apply(hidden, weight, bias, targets, 4),
                                   expected)


def test_linear_cross_entropy_workspace_is_reused_and_changes_nothing():
    """The CPU logits workspace: the same loss and gradients as fresh chunks, and one
    buffer across chunks and calls (its reuse is what saves the page faults)."""
    torch.manual_seed(0)
    weight = torch.randn(13, 6, requires_grad=True)
    bias = torch.randn(13, requires_grad=True)
    workspace = LogitsWorkspace()
    buffers = set()
    for rows in (11, 7):  # a second, smaller call fits in the first call's buffer
        hidden = torch.randn(rows, 6, requires_grad=True)
        targets = torch.randint(0, 13, (rows,))
        results = []
        for space in (None, workspace):
            loss = LinearCrossEntropy.apply(hidden, weight, bias, targets, 4, space)
            grads = torch.autograd.grad(loss, (hidden, weight, bias))
            results.append((loss, *grads))
        for fresh, reused in zip(*results):
            torch.testing.assert_close(reused, fresh, rtol=1e-6, atol=1e-6)
        buffers.add(workspace.buffer.data_ptr())
    assert len(buffers) == 1 and workspace.buffer.numel() == 4 * 13


def test_loss_chunk_size_must_be_positive():
    with pytest.raises(ConfigError, match="train.loss_chunk_size"):
        load_config(DEMO_CONFIG, {"train.loss_chunk_size": 0})


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["mmengine", "hf"])
def test_training_with_the_optimisation_off_logs_the_same_losses(engine, tmp_path):
    from xft.engine.train import train

    options = {"train.max_steps": 4, "train.log_interval": 1, "train.batch_size": 2,
               "train.grad_accum": 2, "data.pack": True, "data.max_length": 64,
               "evaluation.prompts": []}
    losses = {}
    for at_labels_only in (True, False):
        work_dir = tmp_path / str(at_labels_only)
        train(DEMO_CONFIG, work_dir=work_dir, engine=engine,
              cfg_options={**options, "train.loss_at_labels_only": at_labels_only})
        losses[at_labels_only] = [json.loads(line)["loss"] for line in
                                  (work_dir / "metrics.jsonl").open(encoding="utf-8")]
    assert len(losses[True]) == 4
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)
    assert losses[True][-1] < losses[True][0]  # it trained
