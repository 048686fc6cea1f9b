"""The mmengine engine: run an experiment on MMEngine's Runner.

xft builds the model, objective, dataset and collator (xft.engine.builder); this
adapter wraps the model in xft's ObjectiveModel (xft.engine.mmengine_model) and
hands Runner a loader of whole accumulation windows, an OptimWrapper spec and
xft's lr schedule, plus xft's hooks (xft.engine.mmengine_hooks) for metrics,
evaluation chat, validation, checkpoints and the final Hugging Face artifact.
With DeepSpeed the model and optimizer go through deepspeed.initialize instead
(xft.engine.mmengine_deepspeed). Its checkpoint layout is in xft.engine.engines.
"""

import math
from pathlib import Path

import torch
from mmengine.runner import Runner

from xft.data.sampler import RunBatchSampler
from xft.engine import distributed
from xft.engine.engines import ENGINES
from xft.engine.export import HF_DIR_NAME
from xft.engine.mmengine_hooks import (CheckpointHook, ExportHook, MonitorHook, RngStateHook,
                                       ValidationHook)
from xft.engine.mmengine_model import ObjectiveModel, optim_wrapper_type
from xft.engine.model_card import RunCard
from xft.engine.monitor import TrainingMonitor
from xft.engine.safe_load import load_weights_only
from xft.engine.validation import Validator
from xft.engine.windows import window_loader
from xft.errors import XftError
from xft.inference.chat_eval import ChatEvaluator
from xft.model.optimizer import build_optimizer


def run(built, resume=None, deepspeed=None):
    """Train with MMEngine's Runner. `built` is an xft.engine.builder.BuiltExperiment.

    `resume`: None (fresh run), True (newest checkpoint in the work dir) or a checkpoint path.
    `deepspeed`: None or a resolved DeepSpeed config (xft.engine.deepspeed_config).
    """
    exp, plan = built.experiment, built.plan
    checkpoint = ENGINES["mmengine"].resolve_resume(resume, built.work_dir)
    if checkpoint is not None:
        # MMEngine loads it with torch's weights_only=True default; refusing a crafted or
        # old-format file first gives a one-line error naming it.
        load_weights_only(checkpoint, mmap=True)
    if deepspeed is not None and checkpoint is not None:
        raise XftError("--resume with --deepspeed is not supported on the mmengine engine "
                       "(use --engine hf)")
    train = exp.train
    if distributed.is_distributed():
        distributed.init_process_group()
    batches = RunBatchSampler(len(built.dataset), train.batch_size, plan.total_micro_batches,
                              shuffle=exp.data.shuffle, seed=exp.seed,
                              world_size=distributed.world_size(), rank=distributed.rank())
    # One pass over this loader is the whole run, so MMEngine never restarts it.
    dataloader = window_loader(built.dataset, built.collator, batches, train.grad_accum,
                               exp.data.num_workers)
    max_norm = exp.optim.max_grad_norm if exp.optim.max_grad_norm is not None else math.inf

    def make_optimizer(params):
        # Runner offers all parameters; xft's optimizer picks the trainable groups itself.
        return build_optimizer(built.model, exp.optim, exp.method)

    # Given as a config (not an instance) so Runner builds it with its own MessageHub,
    # where the gradient norm is recorded. Accumulation happens inside train_step.
    optim_wrapper = dict(
        **optim_wrapper_type(train.mixed_precision), optimizer=dict(type=make_optimizer),
        # An infinite max_norm clips nothing but still records the gradient norm.
        clip_grad=dict(max_norm=max_norm))
    scheduler = dict(type="XftStepLR", by_epoch=False, total_steps=plan.total_steps,
                     warmup_steps=plan.warmup_steps, kind=train.lr_scheduler)
    default_hooks = dict(
        timer=dict(type="IterTimerHook"),
        logger=None,  # xft's MonitorHook prints the progress line, as on every engine
        param_scheduler=dict(type="ParamSchedulerHook"),
        checkpoint=None,  # replaced by xft's atomic CheckpointHook (custom_hooks)
        sampler_seed=None)  # RunBatchSampler orders every epoch itself
    model = ObjectiveModel(built.model, built.objective)
    # The process group exists already (see init_process_group), so the 'pytorch'
    # launcher only tells Runner to use it and wrap the model: DDP on CPU takes no device_ids.
    runner_cfg = dict(model_wrapper_cfg=dict(
        type="XftDistributedDataParallel",
        device_ids=[distributed.local_rank()] if torch.cuda.is_available() else None))
    if deepspeed is not None:
        from xft.engine.mmengine_deepspeed import deepspeed_model_and_optim_wrapper

        model, optim_wrapper = deepspeed_model_and_optim_wrapper(
            model, build_optimizer(built.model, exp.optim, exp.method), deepspeed)
        runner_cfg = None  # the model comes wrapped
        # MMEngine's checkpoint holds one state dict saved by rank 0: under ZeRO the
        # optimizer state (and, at stage 3, the weights) is spread over all ranks, so
        # no CheckpointHook below.
        if distributed.is_main_process():
            print("xft: warning: no intermediate checkpoints with --deepspeed on the mmengine "
                  "engine (the final artifact is exported); use --engine hf to resume")
    monitor = TrainingMonitor(built.work_dir, plan.total_steps, train.log_interval,
                              built.objective)
    chat = ChatEvaluator(exp.evaluation, built.tokenizer, built.template, exp.system,
                         built.work_dir, writes=distributed.is_main_process())
    validator = Validator(built, monitor, chat) if built.validation is not None else None
    hooks = [MonitorHook(monitor, chat, built.objective.metric_names)]
    if validator is not None:
        hooks.append(ValidationHook(validator))
    hooks += [ExportHook(built.tokenizer, built.template, built.config_text, validator,
                         RunCard(exp, built.work_dir)),
              RngStateHook()]
    if deepspeed is None:
        hooks.append(CheckpointHook(train.save_interval, train.save_total_limit, checkpoint))
    runner = Runner(
        model=model,
        work_dir=str(built.work_dir),
        train_dataloader=dataloader,
        train_cfg=dict(by_epoch=False, max_iters=plan.total_steps),
        optim_wrapper=optim_wrapper,
        param_scheduler=[scheduler],
        default_hooks=default_hooks,
        custom_hooks=hooks,
        randomness=dict(seed=exp.seed),
        resume=checkpoint is not None,
        load_from=checkpoint,
        default_scope="mmengine",
        launcher="pytorch" if distributed.is_distributed() else "none",
        cfg=runner_cfg,
    )
    runner.train()
    return Path(built.work_dir) / HF_DIR_NAME
