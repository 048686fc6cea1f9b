"""`xft train`: load a config, build the experiment, run it on the chosen engine."""

from pathlib import Path

from xft.config.loader import config_text, load_config
from xft.engine.distributed import is_main_process
from xft.engine.run_lock import work_dir_lock
from xft.outputs import remove_leftovers


def default_work_dir(config_filename):
    return Path("work_dirs") / Path(config_filename).stem


def train(config, work_dir=None, cfg_options=None, seed=None, resume=None, backend=None,
          deepspeed=None, force=False):
    """Train and return the path of the exported Hugging Face artifact.

    `backend` ('mmengine' or 'hf') overrides the config's train.backend. `deepspeed`:
    None, a shipped DeepSpeed config name (zero1, zero2, ...) or a JSON file.
    `force` breaks the work dir's lock when the run that took it is gone (run_lock).
    """
    options = dict(cfg_options or {})
    if seed is not None:
        options["seed"] = seed
    if backend is not None:
        options["train.backend"] = backend
    cfg, experiment = load_config(config, options)
    work_dir = Path(work_dir or experiment.work_dir or default_work_dir(cfg.filename))
    work_dir.mkdir(parents=True, exist_ok=True)
    if not is_main_process():  # rank 0 holds the lock for the whole run
        return _train(experiment, cfg, work_dir, resume, deepspeed)
    with work_dir_lock(work_dir, force):
        remove_leftovers(work_dir)  # staging folders of an export that was cut off
        return _train(experiment, cfg, work_dir, resume, deepspeed)


def _train(experiment, cfg, work_dir, resume, deepspeed):
    from xft.engine.builder import build_experiment

    if experiment.train.backend == "hf":
        from xft.engine.hf_backend import resolve_resume, run_hf as run
    else:
        from xft.engine.mmengine_backend import resolve_resume, run_mmengine as run
    checkpoint = resolve_resume(resume, work_dir)  # fail before the model is loaded
    if deepspeed is None:
        return run(build_experiment(experiment, config_text(cfg), work_dir), resume=checkpoint)
    from xft.engine.deepspeed_config import resolve_deepspeed_config
    from xft.engine.distributed import single_process_env

    ds_config = resolve_deepspeed_config(deepspeed, experiment)  # fails before building too
    with single_process_env():
        return run(build_experiment(experiment, config_text(cfg), work_dir), resume=checkpoint,
                   deepspeed=ds_config)
