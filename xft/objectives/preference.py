"""Preference objectives: DPO and its family, SimPO, ORPO, KTO, and reward models.

Data: a preference format (xft.data.formats.preference) maps a record to a
PreferencePair (or, for KTO, a LabeledReply); `prepare` renders each side with
the bound template (the same one SFT uses) and `encode` tokenizes the sides and
stores the shared prompt once (xft.data.encode_pairs). A batch holds the chosen
sides of its pairs, then their rejected sides (xft.data.collate_pairs), so one
forward scores both; log-probs are taken at reply positions only
(xft.model.logprobs). The losses are the pure functions of
xft.model.preference_loss; the normaliser of a step is its number of pairs
(KTO: replies), so every loss and metric is a mean over the step's pairs,
whatever the gradient accumulation and number of processes.

The reference policy (xft.model.reference) is chosen from the starting model
by `prepare_model`, which the build step calls before any engine wraps the
model: LoRA/QLoRA → the same model with its adapter disabled, or the frozen
starting adapter when LoRA continues from one (method.init_adapter); full
fine-tuning → a frozen copy of the starting weights. DPO's
`precompute_reference` instead scores every training and validation pair with
that reference once, before training (`prepare_data`, cached with the dataset),
and the batches carry the scores: no reference forward and, for full
fine-tuning, no copy.

docs/preference.md describes each objective, its options and its metrics.
"""

from dataclasses import dataclass, replace
from typing import Optional

import torch

from xft.data.collate_pairs import LabeledCollator, PackedPairCollator, PairCollator
from xft.data.conversation import with_system
from xft.data.encode_pairs import (LABELED_SIDES, PAIR_SIDES, encode_rendered_sides,
                                   render_sides)
from xft.data.formats.preference import get_preference_format, to_labeled, to_pair
from xft.data.pack import pack_pairs
from xft.errors import ConfigError
from xft.model.logprobs import sequence_logprobs, sequence_scores
from xft.model.preference_loss import (DPO_LOSS_TYPES, bradley_terry_losses, dpo_losses,
                                       kto_losses, orpo_losses, pair_metrics, sft_nll,
                                       simpo_losses)
from xft.model.reference import (Reference, drop_reference, precompute_scores,
                                 reference_scores, starting_reference)
from xft.objectives.base import LossOutput, Objective, register_objective
from xft.objectives.sft import masked_text

PAIR_METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected")


def _check_positive(name, value):
    if not value > 0:
        raise ConfigError(f"'objective.{name}' must be > 0, got {value}")


class PairObjective(Objective):
    """What every paired objective shares: data, batches, the pair count."""

    fields = ("prompt_ids", "chosen_ids", "chosen_labels", "rejected_ids", "rejected_labels")
    sides = PAIR_SIDES
    count_key = "pairs"
    metric_names = PAIR_METRICS
    validation_key = "eval_rewards/accuracies"
    validation_mode = "max"

    def __init__(self, options=None, train=None):
        super().__init__(options, train)
        self.at_labels_only = train.loss_at_labels_only if train is not None else True
        self.chunk_size = train.loss_chunk_size if train is not None else 1024

    def map_function(self, fmt):
        return get_preference_format(fmt)

    def map_record(self, fmt, record, mapping=None):
        return to_pair(fmt, mapping.apply(record) if mapping else record)

    def prepare(self, mapped, template, system):
        return render_sides(replace(mapped, prompt=with_system(mapped.prompt, system)), template)

    def encode(self, prepared, tokenizer, max_length, truncation):
        return encode_rendered_sides(prepared, tokenizer, max_length, truncation)

    def sample_length(self, sample):
        return len(sample["prompt_ids"]) + max(len(sample[f"{s}_ids"]) for s in self.sides)

    def pack(self, samples, max_length, seed):
        return pack_pairs(samples, max_length, seed)

    def collator(self, pad_token_id, packed):
        return (PackedPairCollator if packed else PairCollator)(pad_token_id)

    def show(self, sample, tokenizer, color=False):
        return "\n".join(f"--- {side}:\n" + masked_text(
            tokenizer, sample["prompt_ids"] + sample[f"{side}_ids"],
            [-100] * len(sample["prompt_ids"]) + sample[f"{side}_labels"], color)
            for side in self.sides)

    def count(self, batch):
        if "sequence_index" in batch:  # packed rows: two sequences per pair
            return (batch["sequence_index"].max() + 1) // 2
        return torch.tensor(batch["input_ids"].size(0) // 2, device=batch["input_ids"].device)

    def policy_logps(self, model, batch):
        """(chosen sums, rejected sums, chosen tokens, rejected tokens), one forward."""
        logps, tokens = sequence_logprobs(model, batch, self.at_labels_only, self.chunk_size)
        return (*logps.chunk(2), *tokens.chunk(2))


class ReferencedObjective(PairObjective):
    """A paired objective whose loss compares the policy with a reference policy."""

    def __init__(self, options=None, train=None):
        super().__init__(options, train)
        self.reference = None

    precompute = False  # DPO's option: score the reference once, before training

    def prepare_model(self, model, method_cfg):
        """Decide the reference policy from the starting model (xft.model.reference);
        one that is precomputed needs no frozen copy of the model for its pass."""
        self.reference = starting_reference(model, method_cfg, copy=not self.precompute)
        return model

    def prepare_data(self, model, datasets, scores_cache=None, log=print):
        """With `precompute`: every pair's reference sums, from the cache or one pass
        over the samples, stored in them as ref_chosen_logps / ref_rejected_logps (the
        collator batches them as ref_logps); the reference is then 'precomputed'."""
        if not self.precompute or self.reference.kind == "precomputed":
            return
        from xft.data.cache import samples_digest

        for dataset, name in zip(datasets, ("training", "validation")):
            if dataset is None:
                continue
            samples = dataset.samples
            digest = samples_digest(samples, self.fields)
            what = {"scores": "dpo reference log-probs", "at_labels_only": self.at_labels_only}
            scores = scores_cache.load(what, digest) if scores_cache else None
            if scores is None:
                scores = self._reference_pass(model, samples)
                entry = scores_cache.save(what, digest, scores) if scores_cache else None
                log(f"reference log-probs of {len(samples)} {name} pairs computed"
                    + (f" and cached in {entry}" if entry else " (data.cache is off)"))
            else:
                log(f"reference log-probs of {len(samples)} {name} pairs from the cache")
            for sample, (chosen, rejected) in zip(samples, scores.tolist()):
                sample["ref_chosen_logps"], sample["ref_rejected_logps"] = chosen, rejected
        drop_reference(model, self.reference)
        self.reference = Reference("precomputed")

    def _reference_pass(self, model, samples):
        """[len(samples), 2] reference sums (chosen, rejected), float64."""
        import numpy as np

        # The pad id only fills positions the attention mask and the labels skip.
        collate = self.collator(getattr(model.config, "pad_token_id", None) or 0, packed=False)
        size = self.train.batch_size if self.train is not None else 1
        per_batch = precompute_scores(model, self.reference, samples, collate,
                                      self._reference_sums, size)
        return np.concatenate([b.view(2, -1).T.double().numpy() for b in per_batch])

    def _reference_sums(self, model, batch):
        return sequence_logprobs(model, batch, self.at_labels_only, self.chunk_size)[0]

    def reference_logps(self, model, batch):
        """Reference sums per row [2B], without gradients."""
        if self.reference is None:
            raise RuntimeError(f"objective '{self.name}': prepare_model was not called")
        if self.precompute and self.reference.kind != "precomputed":
            # The reference is the policy's own weights until the pass has run.
            raise RuntimeError(f"objective '{self.name}': the reference log-probs were not "
                               "precomputed (prepare_data was not called)")
        return reference_scores(model, batch, self.reference, self._reference_sums)


@dataclass
class DPOOptions:
    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid | robust | hinge | ipo
    label_smoothing: float = 0.0  # sigmoid: cDPO; robust: the label flip probability
    rpo_alpha: float = 0.0  # > 0: add rpo_alpha × the chosen reply's NLL per token (RPO)
    # Score every pair with the reference once before training (cached with the dataset)
    # instead of a reference forward each step; full fine-tuning then keeps no frozen copy.
    precompute_reference: bool = False


@register_objective
class DPO(ReferencedObjective):
    name = "dpo"
    Options = DPOOptions

    def __init__(self, options=None, train=None):
        super().__init__(options, train)
        o = self.options
        _check_positive("beta", o.beta)
        if o.loss_type not in DPO_LOSS_TYPES:
            raise ConfigError(f"'objective.loss_type' must be one of {list(DPO_LOSS_TYPES)}, "
                              f"got {o.loss_type!r}")
        smoothed = o.loss_type in ("sigmoid", "robust")
        if not (0 <= o.label_smoothing < 0.5 if smoothed else o.label_smoothing == 0):
            raise ConfigError(f"'objective.label_smoothing' must be in [0, 0.5) for loss_type "
                              f"'sigmoid' or 'robust' and 0 otherwise, got {o.label_smoothing}")
        if o.rpo_alpha < 0:
            raise ConfigError(f"'objective.rpo_alpha' must be >= 0, got {o.rpo_alpha}")
        self.metric_names = PAIR_METRICS + (("nll",) if o.rpo_alpha else ())
        self.precompute = o.precompute_reference

    def pack(self, samples, max_length, seed):
        if self.precompute:
            raise ConfigError("'objective.precompute_reference' and 'data.pack' do not go "
                              "together yet: set data.pack=False or precompute_reference="
                              "False")
        return super().pack(samples, max_length, seed)

    def loss(self, model, batch):
        o = self.options
        reference = self.reference_logps(model, batch)  # before the policy's graph exists
        chosen, rejected, n_chosen, n_rejected = self.policy_logps(model, batch)
        ref_chosen, ref_rejected = reference.chunk(2)
        losses, chosen_rewards, rejected_rewards = dpo_losses(
            chosen, rejected, ref_chosen, ref_rejected, o.beta, o.loss_type, o.label_smoothing,
            n_chosen, n_rejected)
        metrics = pair_metrics(chosen_rewards, rejected_rewards, chosen, rejected)
        if o.rpo_alpha:
            nll = sft_nll(chosen, n_chosen)
            losses = losses + o.rpo_alpha * nll
            metrics["nll"] = nll.detach().sum()
        return LossOutput(losses.sum(), self.count(batch), metrics)


@dataclass
class SimPOOptions:
    beta: float = 2.0
    gamma: float = 0.5  # the target reward margin γ
    label_smoothing: float = 0.0


@register_objective
class SimPO(PairObjective):
    name = "simpo"
    Options = SimPOOptions

    def __init__(self, options=None, train=None):
        super().__init__(options, train)
        _check_positive("beta", self.options.beta)

    def loss(self, model, batch):
        o = self.options
        chosen, rejected, n_chosen, n_rejected = self.policy_logps(model, batch)
        losses, chosen_rewards, rejected_rewards = simpo_losses(
            chosen, rejected, n_chosen, n_rejected, o.beta, o.gamma, o.label_smoothing)
        return LossOutput(losses.sum(), self.count(batch),
                          pair_metrics(chosen_rewards, rejected_rewards, chosen, rejected))


@dataclass
class ORPOOptions:
    beta: float = 0.1  # λ, the weight of the odds-ratio term


@register_objective
class ORPO(PairObjective):
    name = "orpo"
    Options = ORPOOptions

    def __init__(self, options=None, train=None):
        super().__init__(options, train)
        _check_positive("beta", self.options.beta)
        self.metric_names = PAIR_METRICS + ("nll",)

    def loss(self, model, batch):
        chosen, rejected, n_chosen, n_rejected = self.policy_logps(model, batch)
        losses, chosen_rewards, rejected_rewards = orpo_losses(
            chosen, rejected, n_chosen, n_rejected, self.options.beta)
        metrics = pair_metrics(chosen_rewards, rejected_rewards, chosen, rejected)
        metrics["nll"] = sft_nll(chosen, n_chosen).detach().sum()
        return LossOutput(losses.sum(), self.count(batch), metrics)


@dataclass
class KTOOptions:
    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0


@register_objective
class KTO(ReferencedObjective):
    """Unpaired: a batch is B labelled replies; the normaliser counts replies."""

    name = "kto"
    Options = KTOOptions
    fields = ("prompt_ids", "completion_ids", "completion_labels", "label")
    sides = LABELED_SIDES
    count_key = "replies"
    metric_names = ("kl", "rewards/desirable", "rewards/undesirable", "desirable")
    validation_key = "eval_loss"
    validation_mode = "min"

    def __init__(self, options=None, train=None):
        super().__init__(options, train)
        for name in ("beta", "desirable_weight", "undesirable_weight"):
            _check_positive(name, getattr(self.options, name))

    def map_function(self, fmt):
        return get_preference_format(fmt, unpaired=True)

    def map_record(self, fmt, record, mapping=None):
        return to_labeled(fmt, mapping.apply(record) if mapping else record)

    def pack(self, samples, max_length, seed):
        raise ConfigError("objective 'kto' does not support data.pack: its KL rows pair each "
                          "prompt with another reply of the same padded micro-batch")

    def collator(self, pad_token_id, packed):
        if packed:
            raise ConfigError("objective 'kto' does not support data.pack")
        return LabeledCollator(pad_token_id)

    def count(self, batch):
        return torch.tensor(batch["input_ids"].size(0), device=batch["input_ids"].device)

    def loss(self, model, batch):
        o = self.options
        kl_batch = {key[3:]: value for key, value in batch.items() if key.startswith("kl_")}
        score = self._sums
        reference = self.reference_logps(model, batch)
        ref_kl = self.reference_logps(model, kl_batch)
        with torch.no_grad():
            # KTO's reference point: the KL of policy from reference, estimated on
            # mismatched prompt/reply rows of the micro-batch, detached, at least 0.
            kl = (score(model, kl_batch) - ref_kl).mean().clamp(min=0)
        logps = score(model, batch)
        desirable = batch["desirable"]
        losses, rewards = kto_losses(logps, reference, desirable, kl, o.beta,
                                     o.desirable_weight, o.undesirable_weight)
        n = self.count(batch)
        metrics = {"kl": kl * n, "rewards/desirable": rewards[desirable].sum(),
                   "rewards/undesirable": rewards[~desirable].sum(),
                   "desirable": desirable.float().sum()}
        return LossOutput(losses.sum(), n, metrics)

    def _sums(self, model, batch):
        return sequence_logprobs(model, batch, self.at_labels_only, self.chunk_size)[0]


@dataclass
class RewardOptions:
    margin: Optional[float] = None  # a fixed margin m in -logσ(s_c - s_r - m)


@register_objective
class RewardModel(PairObjective):
    """A scalar score per sequence (a sequence-classification head, one label), trained
    with the Bradley-Terry loss on preference pairs."""

    name = "reward"
    Options = RewardOptions
    model_kind = "sequence_classification"
    metric_names = ("accuracy", "margin", "scores/chosen", "scores/rejected")
    validation_key = "eval_accuracy"

    def pack(self, samples, max_length, seed):
        raise ConfigError("objective 'reward' does not support data.pack: a sequence "
                          "classifier scores each row at its last token")

    def collator(self, pad_token_id, packed):
        if packed:
            raise ConfigError("objective 'reward' does not support data.pack")
        return PairCollator(pad_token_id)

    def loss(self, model, batch):
        chosen, rejected = sequence_scores(model, batch).chunk(2)
        losses = bradley_terry_losses(chosen, rejected, self.options.margin)
        chosen, rejected = chosen.detach(), rejected.detach()
        metrics = {"accuracy": (chosen > rejected).float().sum(),
                   "margin": (chosen - rejected).sum(),
                   "scores/chosen": chosen.sum(), "scores/rejected": rejected.sum()}
        return LossOutput(losses.sum(), self.count(batch), metrics)
