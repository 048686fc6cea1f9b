"""The one build step: config → tokenizer, bound template, objective, data, model.

Every command that needs built objects (`xft train`, `check-dataset`,
`convert pth_to_hf`, `eval`, `template render`, ...) calls `build`, so what
a tool shows or converts is built exactly as training builds it: the template
is bound to the run's tokenizer with data.train_on, the datasets are encoded by
the configured objective, and the model is loaded as the objective's model
kind with the tokenizer it may need (model.resize_vocab).

It sits below both xft/engine and xft/tools and hands each layer only the config
sections it needs.
"""

import dataclasses
from dataclasses import dataclass
from typing import Optional

from xft.data.templates import get_template
from xft.model.build import build_tokenizer
from xft.objectives import build_objective


@dataclass
class Built:
    experiment: object
    tokenizer: object
    template: object  # BoundTemplate (or bound 'auto')
    objective: object  # xft.objectives.Objective
    dataset: Optional[object] = None  # EncodedDataset (parts 'data')
    validation: Optional[object] = None  # held-out EncodedDataset, or None
    report: Optional[object] = None  # xft.data.pipeline.DataReport
    model: Optional[object] = None  # parts 'model'

    @property
    def collator(self):
        """The collator matching the built datasets (padded or packed)."""
        return self.objective.collator(self.tokenizer.pad_token_id,
                                       self.experiment.data.pack)


PARTS = ("data", "model")


def build(experiment, parts=("data",), log=print):
    """Build `experiment` (an xft.config.schema.Experiment).

    The tokenizer, the bound template and the objective are always built; `parts`
    adds 'data' (training and validation datasets with their report) and/or 'model'.
    Data is built before the model, so a data error never waits for a model load.
    """
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown build parts {sorted(unknown)}; known: {PARTS}")
    tokenizer = build_tokenizer(experiment.tokenizer, experiment.model.path)
    template = get_template(experiment.template, tokenizer, experiment.data.train_on)
    objective = build_objective(experiment.objective, experiment.train)
    objective.attach(tokenizer, template, experiment.seed)
    built = Built(experiment, tokenizer, template, objective)
    if "data" in parts:
        built.dataset, built.validation, built.report = build_data(
            experiment, tokenizer, template, objective, log)
    if "model" in parts:
        from xft.model.build import build_model

        model = build_model(experiment.model, experiment.method, tokenizer,
                            objective.model_kind, log)
        built.model = objective.prepare_model(model, experiment.method)
        if "data" in parts:
            objective.prepare_data(built.model, [built.dataset, built.validation],
                                   scores_cache(experiment), log)
    return built


def scores_cache(experiment):
    """Where per-sample scores of the starting model are kept (xft.data.cache.ScoreCache),
    keyed on what decides its weights; None when data.cache is off or the weights are
    not local files."""
    from xft.data import cache
    from xft.paths import resolve_path

    if not experiment.data.cache:
        return None
    weights = cache.files_stamp(resolve_path(experiment.model.path))
    if weights is None:
        return None
    adapter = experiment.method.init_adapter
    parts = {"weights": weights, "model": dataclasses.asdict(experiment.model),
             "init_adapter": adapter and cache.files_stamp(resolve_path(adapter)),
             "seed": experiment.seed}  # new embedding rows (model.resize_vocab) are seeded
    return cache.ScoreCache(cache.cache_root(experiment.data.cache_dir), parts)


def build_data(experiment, tokenizer, template, objective, log=print):
    """(training dataset, validation dataset or None, DataReport) of the experiment's
    datasets, encoded by `objective` with the bound `template`."""
    from xft.data.pipeline import SourceBuild, build_datasets

    source_build = SourceBuild(experiment.data, tokenizer, template, objective,
                               experiment.system)
    return build_datasets(experiment.datasets, source_build, experiment.val_datasets,
                          experiment.seed, log)


def without_packing(experiment):
    """The experiment with data.pack off (to see or measure samples one by one)."""
    return dataclasses.replace(experiment,
                               data=dataclasses.replace(experiment.data, pack=False))
