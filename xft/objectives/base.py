"""The training-objective contract and its registry.

An objective says what a run trains: how a mapped record becomes an encoded
sample (named sequence fields), how samples are batched, and the loss. The data
pipeline, the cache, the two engines, validation and check-dataset only talk to
it through this contract, so a new objective (preference pairs, a reward model,
RL prompts) is a new module here, registered with `register_objective`, and
nothing else changes. docs/architecture.md, "Adding an objective", walks
through one.

Normalisation: an optimizer step's loss is

    sum of LossOutput.sum over its micro-batches on all ranks
    ---------------------------------------------------------
    sum of Objective.count over the same micro-batches

(label tokens for SFT; pairs for DPO). Engines call `count` on every
micro-batch of the step before the first backward (xft.engine.step_loss), then
scale each micro-batch's `loss(...).sum` and `metrics` by the same factor, so a
metric is logged as (sum over the step) / (the step's count), the same under
any gradient accumulation and number of processes.
"""

from dataclasses import dataclass, field
from typing import Dict

import torch

from xft.data.formats import get_format, to_conversation
from xft.errors import ConfigError, did_you_mean

OBJECTIVES = {}


def register_objective(cls):
    """Class decorator: make `cls` available as `objective = dict(type=cls.name, ...)`."""
    if not cls.name or cls.name in OBJECTIVES:
        raise ValueError(f"objective name {cls.name!r} is missing or already registered")
    OBJECTIVES[cls.name] = cls
    return cls


def objective_class(name):
    """The registered objective class; ConfigError with the closest name for a typo."""
    if name not in OBJECTIVES:
        raise ConfigError(f"'objective.type' must be one of {sorted(OBJECTIVES)}, "
                          f"got {name!r}{did_you_mean(name, OBJECTIVES)}")
    return OBJECTIVES[name]


@dataclass
class NoOptions:
    """Options of an objective that has none (unknown keys still fail in the schema)."""


@dataclass
class LossOutput:
    """One micro-batch's share of the loss, before normalisation."""

    sum: torch.Tensor  # differentiable sum of the loss terms of the micro-batch
    count: torch.Tensor  # normaliser units in the micro-batch (== Objective.count(batch))
    # name → sum over the micro-batch (detached); logged as sum over the step / step count.
    metrics: Dict[str, torch.Tensor] = field(default_factory=dict)


class Objective:
    """Base class: subclasses set the class attributes and implement the methods.

    Class attributes:
      name             the config's objective.type
      Options          a dataclass of the objective's config keys (validated by the schema)
      fields           sequence fields of an encoded sample, e.g. ('input_ids', 'labels');
                       the dataset cache stores exactly these (int or float lists)
      length_field     the field whose length is the sample's length: max_length,
                       packing, statistics
      metric_names     keys of LossOutput.metrics, logged beside 'loss'
      validation_key   the validation record's key that selects the best weights and
                       drives early stopping; validation_mode 'min' or 'max'
      model_kind       which model the objective trains (xft.model.build.MODEL_KINDS)
      count_key        the key of `count`'s total in metrics.jsonl records ('label_tokens';
                       'pairs' for a pairwise objective)
    """

    name = None
    Options = NoOptions
    fields = ()
    length_field = "input_ids"
    metric_names = ()
    validation_key = "eval_loss"
    validation_mode = "min"
    model_kind = "causal_lm"
    count_key = "label_tokens"

    def __init__(self, options=None, train=None):
        """`options`: an instance of Options; `train`: the config's TrainCfg (loss switches)."""
        self.options = options if options is not None else self.Options()
        self.train = train

    # --- data ----------------------------------------------------------------------------
    def map_function(self, fmt):
        """The map function of a dataset's `format` (a name or a callable); ConfigError for
        an unknown name. SFT formats map a record to a conversation or a document."""
        return get_format(fmt)

    def map_record(self, fmt, record, mapping=None):
        """One raw record mapped and checked; RecordError (with the field) when unusable.
        `mapping`: the dataset's FieldMapping (its 'columns' / 'tags')."""
        return to_conversation(fmt, record, mapping)

    def prepare(self, mapped, template, system):
        """A format map function's output (one record) → what `encode` takes; RecordError
        (with the field) for a record this objective cannot use."""
        raise NotImplementedError

    def encode(self, prepared, tokenizer, max_length, truncation):
        """Prepared records → (samples, xft.data.encode.EncodeStats); each sample a dict
        of `fields`. Over-long or untrainable samples are dropped or truncated and counted.
        `stats.origins` lists, per sample, the index in `prepared` it came from (what
        traces held-out samples back to their records, xft.data.heldout)."""
        raise NotImplementedError

    def sample_length(self, sample):
        return len(sample[self.length_field])

    def pack(self, samples, max_length, seed):
        """(rows, xft.data.pack.PackStats), or ConfigError when the objective cannot pack."""
        raise ConfigError(f"objective '{self.name}' does not support data.pack")

    def collator(self, pad_token_id, packed):
        """The callable that turns a list of samples (or packed rows) into a batch."""
        raise NotImplementedError

    def show(self, sample, tokenizer, color=False):
        """A sample as text for `xft check-dataset`, trained parts marked."""
        raise NotImplementedError

    # --- training --------------------------------------------------------------------------
    def prepare_model(self, model, method_cfg):
        """Called once by the build step on the model it built (before any engine wraps
        it or a checkpoint is loaded): what the objective keeps of the starting weights,
        e.g. a reference policy, or what it adds (PPO's value head). Returns the model
        to train."""
        return model

    def prepare_data(self, model, datasets, scores_cache=None, log=print):
        """Called once by the build step after `prepare_model`, with the training and
        validation EncodedDatasets (None where absent): what the objective computes from
        the starting model for every sample before training, e.g. DPO's precomputed
        reference log-probs. `scores_cache`: an xft.data.cache.ScoreCache, or None."""

    def count(self, batch):
        """Normaliser units in a collated micro-batch (a 0-d long tensor on its device)."""
        raise NotImplementedError

    def loss(self, model, batch):
        """LossOutput of `model` on a collated micro-batch."""
        raise NotImplementedError

    def batch_tokens(self, batch):
        """Real (non-padding) tokens in a micro-batch, for throughput."""
        mask = batch.get("attention_mask")
        return int(mask.sum()) if mask is not None else batch["input_ids"].numel()

    def eval_record(self, loss, count, metrics):
        """The validation record for a whole held-out set: `loss` and `metrics` already
        divided by `count`. Must hold `validation_key`."""
        return {"eval_loss": loss, **{f"eval_{k}": v for k, v in metrics.items()},
                "eval_count": count}

    # --- online RL (issue 16) ----------------------------------------------------------
    def attach(self, tokenizer, template, seed):
        """Called once by xft.build with the run's tokenizer, bound template and seed, for
        objectives that generate (RL); the others need nothing."""

    def keep_rollout_samples(self, samples):
        """Called once by the training builder with an xft.inference.chat_eval.RolloutSamples:
        objectives that generate (RL) write some completions with it; the others none."""

    def rollouts(self, model, batches, step, rank=0):
        """The micro-batches of optimizer step `step` (0-based) as the engines train them.

        Engines call this before `count` and `loss`. An objective that defines
        `rollout(model, batch, step, micro_batch, rank)` (RL: generate completions with
        the policy as it is and score them) turns each batch of prompts into a batch
        of completions; the others train their batches as they come."""
        rollout = getattr(self, "rollout", None)
        if rollout is None:
            return batches
        return [rollout(model, batch, step, i, rank) for i, batch in enumerate(batches)]
