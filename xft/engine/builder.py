"""Config → built objects, shared by every engine adapter."""

from dataclasses import dataclass
from pathlib import Path

from xft.data.collate import collator_for
from xft.data.pipeline import build_datasets
from xft.data.templates import get_template
from xft.engine.distributed import world_size
from xft.engine.plan import plan_training
from xft.engine.precision import check_master_weights, check_mixed_precision_device
from xft.model.build import build_model, build_tokenizer, count_parameters



@dataclass
class BuiltExperiment:
    experiment: object
    tokenizer: object
    template: object
    dataset: object
    collator: object
    model: object
    plan: object
    work_dir: Path
    config_text: str  # the resolved config, saved beside the exported artifact
    validation: object = None  # held-out SFTDataset (xft.data.split / val_datasets), or None


def build_experiment(experiment, config_text, work_dir, log=print):
    """Build everything a training run needs; the data is built before the model."""
    import transformers

    check_mixed_precision_device(experiment.train.mixed_precision)
    transformers.set_seed(experiment.seed)
    tokenizer = build_tokenizer(experiment)
    template = get_template(experiment.template, tokenizer, experiment.data.train_on)
    dataset, validation, _ = build_datasets(experiment, tokenizer, template, log=log)
    plan = plan_training(len(dataset), experiment.train, world_size())
    model = build_model(experiment, tokenizer, log=log)
    check_master_weights(model, experiment.train.mixed_precision)
    trainable, total = count_parameters(model)
    log(f"model: {total / 1e6:.2f}M parameters, {trainable / 1e6:.3f}M trainable "
        f"({experiment.method.type}); {len(dataset)} samples; {plan.line()}")
    return BuiltExperiment(experiment, tokenizer, template, dataset,
                           collator_for(experiment, tokenizer), model, plan, Path(work_dir),
                           config_text, validation)
