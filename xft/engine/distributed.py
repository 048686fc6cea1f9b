"""The process's place in a data-parallel run started by torchrun (xft.engine.launch).

torchrun gives each worker RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
MASTER_PORT; a process without them is a single-process run. The rank is read
from the environment, so it is known before any process group exists (the
training plan and the sampler need it while the experiment is built).
"""

import contextlib
import os


def world_size():
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank():
    return int(os.environ.get("RANK", "0"))


def local_rank():
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed():
    return world_size() > 1


def is_main_process():
    """Rank 0 alone writes metrics, evaluation answers and the exported artifact."""
    return rank() == 0


def init_process_group():
    """Join the run's process group (once): nccl on CUDA, gloo on CPU.

    Called before MMEngine's Runner starts, because MMEngine's own set-up for
    torchrun ('pytorch' launcher) calls torch.cuda.set_device and so fails on
    CPU; with a group already in place, MMEngine uses it as it is.
    """
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


@contextlib.contextmanager
def single_process_env():
    """Within: a run without a launcher looks like rank 0 of 1 (DeepSpeed insists on it)."""
    import socket

    if "RANK" in os.environ:
        yield
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    added = dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                 MASTER_PORT=str(port))
    added = {k: v for k, v in added.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def barrier():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
