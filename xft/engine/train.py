"""`xft train`: load a config, build the experiment, run it on the chosen engine."""

from pathlib import Path

from xft.config.loader import config_text, load_config


def default_work_dir(config_filename):
    return Path("work_dirs") / Path(config_filename).stem


def train(config, work_dir=None, cfg_options=None, seed=None, resume=None, engine=None,
          deepspeed=None):
    """Train and return the path of the exported Hugging Face artifact.

    `engine` (a name in xft.engine.engines.ENGINES: 'mmengine' or 'hf') overrides the
    config's train.engine. `deepspeed`: None, a shipped DeepSpeed config name (zero1,
    zero2, ...) or a JSON file.
    """
    options = dict(cfg_options or {})
    if seed is not None:
        options["seed"] = seed
    if engine is not None:
        options["train.engine"] = engine
    cfg, experiment = load_config(config, options)
    work_dir = Path(work_dir or experiment.work_dir or default_work_dir(cfg.filename))
    work_dir.mkdir(parents=True, exist_ok=True)
    from xft.engine.builder import build_experiment
    from xft.engine.engines import get_engine

    runner = get_engine(experiment.train.engine)
    checkpoint = runner.resolve_resume(resume, work_dir)  # fail before the model is loaded
    if deepspeed is None:
        return runner.run(build_experiment(experiment, config_text(cfg), work_dir),
                          resume=checkpoint)
    from xft.engine.deepspeed_config import resolve_deepspeed_config
    from xft.engine.distributed import single_process_env

    ds_config = resolve_deepspeed_config(deepspeed, experiment)  # fails before building too
    with single_process_env():
        return runner.run(build_experiment(experiment, config_text(cfg), work_dir),
                          resume=checkpoint, deepspeed=ds_config)
