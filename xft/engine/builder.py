"""Config → everything a training run needs, shared by every engine adapter.

The objects themselves come from the one build step (xft.build); this adds
what only training needs: the step plan, the work dir, the resolved config.
"""

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from xft.build import build
from xft.engine.distributed import is_main_process, world_size
from xft.engine.monitor import is_logged_step
from xft.engine.plan import plan_training
from xft.engine.precision import check_master_weights, check_mixed_precision_device
from xft.inference.chat_eval import RolloutSamples
from xft.model.build import count_parameters


@dataclass
class BuiltExperiment:
    experiment: object
    tokenizer: object
    template: object
    objective: object  # xft.objectives.Objective: loss, count, metrics, collator
    dataset: object
    collator: object
    model: object
    plan: object
    work_dir: Path
    config_text: str  # the resolved config, saved beside the exported artifact
    validation: object = None  # held-out EncodedDataset (xft.data.split / val_datasets), or None
    report: object = None  # xft.data.pipeline.DataReport


def build_experiment(experiment, config_text, work_dir, log=print):
    """Build everything a training run needs; the data is built before the model."""
    import transformers

    check_mixed_precision_device(experiment.train.mixed_precision)
    transformers.set_seed(experiment.seed)
    built = build(experiment, parts=("data", "model"), log=log)
    plan = plan_training(len(built.dataset), experiment.train, world_size())
    check_master_weights(built.model, experiment.train.mixed_precision)
    trainable, total = count_parameters(built.model)
    built.objective.keep_rollout_samples(RolloutSamples(
        work_dir, experiment.evaluation.rollout_samples,
        partial(is_logged_step, log_interval=experiment.train.log_interval,
                total_steps=plan.total_steps),
        writes=is_main_process()))
    log(f"model: {total / 1e6:.2f}M parameters, {trainable / 1e6:.3f}M trainable "
        f"({experiment.method.type}, objective {built.objective.name}); {len(built.dataset)} "
        f"samples; {plan.line()}")
    return BuiltExperiment(experiment, built.tokenizer, built.template, built.objective,
                           built.dataset, built.collator, built.model, plan, Path(work_dir),
                           config_text, built.validation, built.report)
