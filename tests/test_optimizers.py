"""Optimizers people expect (optim.type): built by xft exactly as transformers' Trainer
builds the same optimizer for its `optim` name, and the same on both engines."""

import json

import pytest
import torch
from conftest import DEMO_CONFIG
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from xft.config.schema import GaloreCfg, MethodCfg, OptimCfg, validate
from xft.errors import ConfigError
from xft.model.optimizer import build_optimizer

# xft's optim.type → the Trainer `optim` name that builds the same optimizer.
TRAINER_NAMES = {"AdamW": "adamw_torch", "AdamW8bit": "adamw_bnb_8bit",
                 "PagedAdamW": "paged_adamw_32bit", "PagedAdamW8bit": "paged_adamw_8bit",
                 "Adafactor": "adafactor", "GaLoreAdamW": "galore_adamw",
                 "GaLoreAdamW8bit": "galore_adamw_8bit", "GaLoreAdafactor": "galore_adafactor"}
GALORE = dict(rank=4, update_proj_gap=2, scale=0.5, proj_type="std",
              target_modules=["self_attn", "mlp"])


def tiny_model():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, max_position_embeddings=64))


def train_steps(model, optimizer, steps=4):
    torch.manual_seed(1)
    ids = torch.randint(0, 64, (2, 16)).to(model.device)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def trainer_optimizer(model, name, cfg, tmp_path):
    """The optimizer transformers' Trainer builds for `optim=name` (its own code path)."""
    args = TrainingArguments(output_dir=str(tmp_path), optim=name, learning_rate=cfg.lr,
                             weight_decay=cfg.weight_decay, adam_beta1=cfg.betas[0],
                             adam_beta2=cfg.betas[1], adam_epsilon=cfg.eps,
                             optim_target_modules=GALORE["target_modules"],
                             optim_args=(f"rank={GALORE['rank']},update_proj_gap="
                                         f"{GALORE['update_proj_gap']},scale={GALORE['scale']},"
                                         f"proj_type={GALORE['proj_type']}"),
                             report_to="none")
    trainer = Trainer(model=model, args=args)
    return trainer.create_optimizer()


@pytest.mark.parametrize("kind", [
    pytest.param(kind, marks=pytest.mark.gpu) if kind == "GaLoreAdamW8bit" else kind
    for kind in TRAINER_NAMES])  # galore-torch's 8-bit projection step needs CUDA
@pytest.mark.slow
def test_each_optimizer_updates_like_the_trainers_own(kind, tmp_path):
    galore = kind.startswith("GaLore")
    # Trainer's GaLore path passes only the lr (no weight decay, GaLore's own eps): compare
    # there with the settings both read alike.
    cfg = OptimCfg(type=kind, lr=1e-2, weight_decay=0.0 if galore else 0.01,
                   eps=1e-6 if galore else 1e-8, galore=GaloreCfg(**GALORE) if galore else None)
    expected_model = tiny_model()
    reference = trainer_optimizer(expected_model, TRAINER_NAMES[kind], cfg, tmp_path)
    ours = tiny_model().to(expected_model.device)  # where Trainer put its model (CUDA if any)
    # CUDA's embedding backward adds with atomics in any order unless told otherwise; Adam
    # turns such last-bit differences of small gradients into visible ones.
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        got = train_steps(ours, build_optimizer(ours, cfg, MethodCfg(type="full")))
        expected = train_steps(expected_model, reference)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    assert got.keys() == expected.keys()
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    start = {n: p for n, p in tiny_model().named_parameters()}
    assert any(not torch.equal(got[n].cpu(), start[n]) for n in got)  # it moved


def experiment(**optim):
    return validate(dict(model=dict(path="xft://tiny-llama"), template="chatml",
                         datasets=[dict(path="xft://data/self_cognition.json")],
                         method=dict(type="full"), optim=optim))


@pytest.mark.parametrize("optim,method,message", [
    (dict(type="GaLoreAdamW"), "full", "needs 'optim.galore'"),
    (dict(type="AdamW", galore=dict(rank=8)), "full", "applies to the GaLore optimizers"),
    (dict(type="GaLoreAdamW", galore=dict(rank=8)), "lora", "not 'lora'"),
    (dict(type="GaLoreAdamW", galore=dict(rank=0)), "full", "must be >= 1"),
    (dict(type="Lion"), "full", "optim.type"),
])
def test_bad_optimizer_settings_name_the_key(optim, method, message):
    raw = dict(model=dict(path="xft://tiny-llama"), template="chatml",
               datasets=[dict(path="xft://data/self_cognition.json")],
               method=dict(type=method), optim=optim)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate(raw)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["Adafactor", "AdamW8bit"])
def test_engines_agree_with_other_optimizers(kind, tmp_path):
    from xft.engine.train import train

    options = {"train.max_steps": 4, "train.log_interval": 1, "train.batch_size": 4,
               "optim.type": kind, "optim.lr": 1e-3, "evaluation.prompts": []}
    losses = {}
    for engine in ("mmengine", "hf"):
        train(DEMO_CONFIG, work_dir=tmp_path / engine, cfg_options=options, engine=engine)
        losses[engine] = [json.loads(line)["loss"]
                          for line in (tmp_path / engine / "metrics.jsonl").open()]
    assert len(losses["hf"]) == 4
    assert losses["hf"] == pytest.approx(losses["mmengine"], rel=1e-4)
    assert losses["hf"][-1] < losses["hf"][0]
