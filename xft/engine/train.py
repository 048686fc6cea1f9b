"""`xft train`: load a config, build the experiment, run it on the chosen engine."""

from pathlib import Path

from xft.config.loader import config_text, load_config


def default_work_dir(config_filename):
    return Path("work_dirs") / Path(config_filename).stem


def train(config, work_dir=None, cfg_options=None, seed=None, resume=None, backend=None,
          deepspeed=None, plan=True):
    """Train and return the path of the exported Hugging Face artifact.

    `backend` ('mmengine' or 'hf') overrides the config's train.backend. `deepspeed`:
    None, a shipped DeepSpeed config name (zero1, zero2, ...) or a JSON file. `plan`: on a
    GPU, estimate the run's memory first and warn if it will not fit (xft.estimate).
    """
    options = dict(cfg_options or {})
    if seed is not None:
        options["seed"] = seed
    if backend is not None:
        options["train.backend"] = backend
    cfg, experiment = load_config(config, options)
    work_dir = Path(work_dir or experiment.work_dir or default_work_dir(cfg.filename))
    work_dir.mkdir(parents=True, exist_ok=True)
    from xft.engine.builder import build_experiment

    if experiment.train.backend == "hf":
        from xft.engine.hf_backend import resolve_resume, run_hf as run
    else:
        from xft.engine.mmengine_backend import resolve_resume, run_mmengine as run
    checkpoint = resolve_resume(resume, work_dir)  # fail before the model is loaded
    if plan:
        warn_before_building(experiment, deepspeed)
    if deepspeed is None:
        return run(build_experiment(experiment, config_text(cfg), work_dir), resume=checkpoint)
    from xft.engine.deepspeed_config import resolve_deepspeed_config
    from xft.engine.distributed import single_process_env

    ds_config = resolve_deepspeed_config(deepspeed, experiment)  # fails before building too
    with single_process_env():
        return run(build_experiment(experiment, config_text(cfg), work_dir), resume=checkpoint,
                   deepspeed=ds_config)


def warn_before_building(experiment, deepspeed):
    from xft.engine.distributed import is_main_process, world_size
    from xft.estimate.report import warn_if_too_big

    if is_main_process():
        warn_if_too_big(experiment, world_size(), deepspeed)
