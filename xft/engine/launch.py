"""`xft train --nproc N`: start the run under torchrun, one worker per process.

The settings follow XTuner's environment variables, so its launch recipes work
unchanged; `--nproc` overrides NPROC_PER_NODE:

    NPROC_PER_NODE  processes on this node (default 1)
    NNODES          nodes (default 1)
    NODE_RANK       this node's index (default 0)
    ADDR, PORT      rendezvous address of node 0 (default 127.0.0.1:29500; a
                    single-node run without them picks a free port itself)

torchrun (torch.distributed.run, called in this process) re-runs
`python -m xft train ...` in each worker with the same arguments minus
`--nproc`. A worker sees RANK/WORLD_SIZE in its environment and trains instead
of launching again. If a worker fails, the others are stopped and `xft train`
exits with that worker's exit code.
"""

import os
import signal
import sys
from dataclasses import dataclass

from xft.console import dropping_logs

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class LaunchSettings:
    nproc_per_node: int
    nnodes: int
    node_rank: int
    addr: str | None
    port: int | None


def in_worker(env=None):
    """True inside a process that torchrun (or another launcher) started as one rank."""
    env = os.environ if env is None else env
    return "RANK" in env and "WORLD_SIZE" in env


def launch_settings(nproc=None, env=None):
    """The launch this command asks for, or None for a plain single-process run."""
    from xft.errors import XftError

    env = os.environ if env is None else env
    if in_worker(env):
        return None
    try:
        nproc_per_node = nproc if nproc is not None else int(env.get("NPROC_PER_NODE", "1"))
        nnodes = int(env.get("NNODES", "1"))
        node_rank = int(env.get("NODE_RANK", "0"))
        port = int(env["PORT"]) if env.get("PORT") else None
    except ValueError as e:
        raise XftError(f"launch settings (--nproc, NPROC_PER_NODE, NNODES, NODE_RANK, PORT) "
                       f"must be integers: {e}") from None
    if nproc_per_node < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise XftError(f"invalid launch settings: {nproc_per_node} processes per node, "
                       f"{nnodes} nodes, node rank {node_rank}")
    if nproc_per_node == 1 and nnodes == 1:
        return None
    return LaunchSettings(nproc_per_node, nnodes, node_rank, env.get("ADDR") or None, port)


def torchrun_arguments(settings, worker_args):
    """torchrun's command line for `python -m xft WORKER_ARGS` in every worker."""
    args = ["--nproc-per-node", str(settings.nproc_per_node)]
    if settings.nnodes == 1 and settings.addr is None and settings.port is None:
        args.append("--standalone")  # local rendezvous on a free port
    else:
        args += ["--nnodes", str(settings.nnodes), "--node-rank", str(settings.node_rank),
                 "--master-addr", settings.addr or "127.0.0.1",
                 "--master-port", str(settings.port or DEFAULT_PORT)]
    return args + ["--module", "xft", *worker_args]


def without_option(argv, option):
    """argv minus `option VALUE` and `option=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def launch(settings, worker_args):
    """Run the workers under torchrun; return 0, or the exit code of the first failed worker."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    print(f"xft: launching {settings.nproc_per_node} processes on node {settings.node_rank} "
          f"of {settings.nnodes} (torchrun)", flush=True)
    try:
        # torchrun announces that it sets OMP_NUM_THREADS=1 for each worker.
        with dropping_logs("torch.distributed.run", "Setting OMP_NUM_THREADS"):
            run(get_args_parser().parse_args(torchrun_arguments(settings, worker_args)))
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        if code < 0:  # killed by a signal: the shell's convention
            code = 128 - code
        name = f" ({signal.Signals(-failure.exitcode).name})" if failure.exitcode < 0 else ""
        print(f"xft: error: worker rank {rank} exited with code {failure.exitcode}{name}",
              file=sys.stderr, flush=True)
        return code
    return 0
