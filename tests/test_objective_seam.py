"""The objective seam: a second objective defined only here plugs in through the registry.

`weighted_sft` is SFT with a per-token weight field: each trained token's
cross-entropy counts `weight` times. It adds a float sample field (through the
dataset cache), its own collator, a loss with a metric, and config options;
nothing in xft/engine or xft/data knows about it. Both engines must train it with
the same per-step losses and metrics, and the metric must equal the value
computed here from the data alone.
"""

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from conftest import DEMO_CONFIG, read_metrics

from xft.config import load_config
from xft.data.collate import PadCollator
from xft.data.encode import IGNORE_INDEX
from xft.engine.train import train
from xft.errors import ConfigError
from xft.objectives import OBJECTIVES, LossOutput, register_objective
from xft.objectives.sft import SFT

ENGINES = ["mmengine", "hf"]


@dataclass
class WeightOptions:
    every: int = 3  # every `every`-th token position gets weight `heavy`
    heavy: float = 2.5


class WeightedSFT(SFT):
    name = "weighted_sft"
    fields = ("input_ids", "labels", "weights")
    metric_names = ("mean_weight",)
    Options = WeightOptions

    def encode(self, prepared, tokenizer, max_length, truncation):
        samples, stats = super().encode(prepared, tokenizer, max_length, truncation)
        for sample in samples:
            sample["weights"] = token_weights(len(sample["input_ids"]), self.options)
        return samples, stats

    def pack(self, samples, max_length, seed):
        raise ConfigError("weighted_sft does not pack")

    def collator(self, pad_token_id, packed):
        pad = PadCollator(pad_token_id)

        def collate(samples):
            batch = pad(samples)
            weights = torch.zeros(batch["input_ids"].shape)
            for row, sample in enumerate(samples):
                weights[row, :len(sample["weights"])] = torch.tensor(sample["weights"])
            return {**batch, "weights": weights}

        return collate

    def loss(self, model, batch):
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "weights")}
        logits = model(**inputs, use_cache=False).logits[:, :-1].float()
        targets, weights = batch["labels"][:, 1:], batch["weights"][:, 1:]
        token_loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                     ignore_index=IGNORE_INDEX, reduction="none")
        trained = (targets != IGNORE_INDEX).reshape(-1)
        weights = weights.reshape(-1)
        return LossOutput((token_loss * weights)[trained].sum(), trained.sum(),
                          {"mean_weight": weights[trained].sum()})


if WeightedSFT.name not in OBJECTIVES:
    register_objective(WeightedSFT)


def token_weights(length, options):
    return [options.heavy if i % options.every == 0 else 1.0 for i in range(length)]


OPTIONS = {"objective": dict(type="weighted_sft", every=2), "train.max_steps": 4,
           "train.log_interval": 1, "train.batch_size": 2, "train.grad_accum": 2}


def test_options_are_validated_like_every_other_key():
    _, exp = load_config(DEMO_CONFIG, OPTIONS)
    assert exp.objective.type == "weighted_sft" and exp.objective.options.every == 2
    with pytest.raises(ConfigError, match="unknown config key 'objective.evry'; did you mean "
                                          "'every'"):
        load_config(DEMO_CONFIG, {"objective": dict(type="weighted_sft", evry=2)})
    with pytest.raises(ConfigError, match="did you mean 'weighted_sft'"):
        load_config(DEMO_CONFIG, {"objective": dict(type="weighted_sf")})


def test_weight_field_goes_through_the_cache(tmp_path):
    from xft.build import build

    _, exp = load_config(DEMO_CONFIG, {**OPTIONS, "data.cache_dir": str(tmp_path)})
    first, second = (build(exp, log=lambda *_: None) for _ in range(2))
    assert [s.cache for s in first.report.sources] == ["built"]
    assert [s.cache for s in second.report.sources] == ["hit"]
    samples = [second.dataset[i] for i in range(len(second.dataset))]
    assert samples == [first.dataset[i] for i in range(len(first.dataset))]
    assert samples[0]["weights"] == token_weights(len(samples[0]["input_ids"]),
                                                   exp.objective.options)


@pytest.mark.slow
def test_both_engines_train_it_with_equal_losses_and_metrics(tmp_path):
    for engine in ENGINES:
        train(DEMO_CONFIG, work_dir=tmp_path / engine,
              cfg_options={**OPTIONS, "train.engine": engine})
    mm, hf = (read_metrics(tmp_path / engine) for engine in ENGINES)
    assert [r["step"] for r in mm] == [r["step"] for r in hf] == [1, 2, 3, 4]
    for a, b in zip(mm, hf):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["mean_weight"] == pytest.approx(a["mean_weight"], rel=1e-6)
        assert b["label_tokens"] == a["label_tokens"]
    # The metric is normalised by the step's label tokens across the accumulation window:
    # recompute step 1's from the data in the run's order.
    from xft.build import build
    from xft.data.sampler import RunBatchSampler

    _, exp = load_config(DEMO_CONFIG, OPTIONS)
    built = build(exp, log=lambda *_: None)
    weight_sum = count = 0
    for indices in RunBatchSampler(len(built.dataset), 2, 2, seed=exp.seed):
        for i in indices:
            sample = built.dataset[i]
            for label, weight in zip(sample["labels"][1:], sample["weights"][1:]):
                if label != IGNORE_INDEX:
                    weight_sum, count = weight_sum + weight, count + 1
    assert mm[0]["label_tokens"] == count
    assert mm[0]["mean_weight"] == pytest.approx(weight_sum / count, rel=1e-6)
    assert 1.0 < mm[0]["mean_weight"] < 2.5 and math.isfinite(mm[-1]["loss"])
