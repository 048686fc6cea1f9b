"""`xft train`: load a config, build the experiment, run it on the chosen engine."""

from pathlib import Path

from xft.config.loader import config_text, load_config
from xft.engine.checkpoint_files import atomic_write_text
from xft.engine.distributed import is_main_process
from xft.engine.export import CONFIG_COPY
from xft.engine.precision import cpu_hint
from xft.engine.run_lock import work_dir_lock
from xft.engine.trackers import check_installed
from xft.errors import doing
from xft.outputs import remove_leftovers


def default_work_dir(config_filename):
    return Path("work_dirs") / Path(config_filename).stem


def train(config, work_dir=None, cfg_options=None, seed=None, resume=None, engine=None,
          deepspeed=None, plan=True, force=False):
    """Train and return the path of the exported Hugging Face artifact.

    `engine` (a name in xft.engine.engines.ENGINES: 'mmengine' or 'hf') overrides the
    config's train.engine. `deepspeed`: None, a shipped DeepSpeed config name (zero1,
    zero2, ...) or a JSON file. `plan`: on a GPU, estimate the run's memory first and warn
    if it will not fit (xft.estimate). `force` breaks the work dir's lock when the run that
    took it is gone (run_lock).
    """
    options = dict(cfg_options or {})
    if seed is not None:
        options["seed"] = seed
    if engine is not None:
        options["train.engine"] = engine
    cfg, experiment = load_config(config, options)
    work_dir = Path(work_dir or experiment.work_dir or default_work_dir(cfg.filename))
    work_dir.mkdir(parents=True, exist_ok=True)
    text = config_text(cfg, work_dir)  # the run's config as one loadable file
    if not is_main_process():  # rank 0 holds the lock for the whole run
        return _train(experiment, text, cfg.filename, work_dir, resume, deepspeed, plan)
    with work_dir_lock(work_dir, force):
        remove_leftovers(work_dir)  # staging folders of an export that was cut off
        # The run's config, from the start: a crashed run resumes or converts from its
        # work dir alone (`xft train WORK_DIR/xft_config.py --resume`).
        atomic_write_text(work_dir / CONFIG_COPY, text)
        return _train(experiment, text, cfg.filename, work_dir, resume, deepspeed, plan)


def _train(experiment, text, config_file, work_dir, resume, deepspeed, plan):
    import contextlib

    from xft.engine.builder import build_experiment
    from xft.engine.engines import get_engine

    runner = get_engine(experiment.train.engine)
    checkpoint = runner.resolve_resume(resume, work_dir)  # fail before the model is loaded
    check_installed(experiment.train.report_to)
    hint = cpu_hint(experiment)
    if hint and is_main_process():
        print(f"xft: note: {hint}")
    if plan:
        warn_before_building(experiment, deepspeed)
    log = print if is_main_process() else (lambda line: None)  # the report once, from rank 0
    ds_config, building = None, contextlib.nullcontext()
    if deepspeed is not None:
        from xft.engine.deepspeed_config import resolve_deepspeed_config
        from xft.engine.distributed import single_process_env

        ds_config = resolve_deepspeed_config(deepspeed, experiment)  # fails before building too
        building = single_process_env()
    with building:
        built = build_experiment(experiment, text, work_dir, log=log)
        _write_heldout(built, config_file)
        _check_resume(checkpoint, built)
        stage = _stage(experiment, checkpoint) + (" under DeepSpeed" if deepspeed else "")
        with doing(stage):
            return runner.run(built, resume=checkpoint, deepspeed=ds_config)


def _write_heldout(built, config_file):
    """work_dir/heldout.jsonl: the records behind the held-out validation samples
    (xft.data.heldout), for `xft eval --data/--prompts` after training."""
    from xft.data.heldout import HELDOUT_FILE, write_heldout

    report = built.report
    if not is_main_process() or report is None or report.validation is None:
        return
    path = built.work_dir / HELDOUT_FILE
    if report.held_out is None:
        print(f"{path}: not written: objective '{built.objective.name}' does not say which "
              "record each sample came from")
        return
    if not report.held_out:  # validation from val_datasets only
        return
    try:
        with doing(f"writing {path}"):
            count = write_heldout(path, report.held_out, built.experiment.system, config_file)
    except ValueError as e:  # a format function that has no name to write (a lambda)
        print(f"{path}: not written: {e}")
        return
    print(f"held-out records: {count} written to {path} (evaluate them with "
          f"`xft eval MODEL --data {path}`)")


def _stage(experiment, checkpoint):
    where = f"resuming from {checkpoint}" if checkpoint else "training"
    return f"{where} on the {experiment.train.engine} engine"


def _check_resume(checkpoint, built):
    if checkpoint is not None:
        from xft.engine.resume_check import check_resume
        from xft.engine.safe_load import check_pickles

        if Path(checkpoint).is_dir():  # every pickle refused or passed before anything reads
            check_pickles(checkpoint)
        check_resume(checkpoint, built, log=print if is_main_process() else lambda line: None)


def warn_before_building(experiment, deepspeed):
    from xft.engine.distributed import world_size
    from xft.estimate.report import warn_if_too_big

    if is_main_process():
        warn_if_too_big(experiment, world_size(), deepspeed)
