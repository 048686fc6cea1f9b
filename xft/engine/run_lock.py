"""One run per work dir: `work_dir/.xft.lock` holds the owner's pid and host.

Two runs writing into one work dir would interleave their metrics and leave
checkpoints and `hf/` from different runs. `xft train` takes the lock (rank 0
alone: torchrun's other workers share rank 0's run, and the `--nproc` launcher
never builds the run) and removes it when the run ends, however it ends; a
killed run leaves it behind, and `--force` then breaks it once its process is
gone. The file is created with O_EXCL, so of two runs starting together one wins.
"""

import contextlib
import json
import os
import socket
from pathlib import Path

from xft.errors import XftError
from xft.outputs import process_alive

LOCK_FILE = ".xft.lock"


@contextlib.contextmanager
def work_dir_lock(work_dir, force=False, log=print):
    """Hold the work dir's lock within; XftError when another run holds it."""
    path = Path(work_dir) / LOCK_FILE
    mine = {"pid": os.getpid(), "host": socket.gethostname()}
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            _break_if_allowed(path, force, mine["host"], log)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(mine, f)
    try:
        yield path
    finally:
        if read_owner(path) == mine:
            path.unlink(missing_ok=True)


def read_owner(path):
    """{'pid', 'host'} of a lock file, or None when unreadable (e.g. written half)."""
    try:
        owner = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _break_if_allowed(path, force, host, log):
    owner = read_owner(path)
    if owner is None and not path.exists():
        return  # released meanwhile: try again
    who = ("another run (unreadable lock)" if owner is None
           else f"another run (pid {owner.get('pid')} on {owner.get('host')})")
    if not force:
        raise XftError(f"{path.parent} is in use by {who}; wait for it, use another "
                       f"--work-dir, or --force if that run is gone ({path})")
    if owner is not None and owner.get("host") != host:
        raise XftError(f"{path.parent} is locked by {who}; --force cannot check a process "
                       f"on another host: delete {path} if that run is over")
    if owner is not None and process_alive(owner.get("pid")):
        raise XftError(f"{path.parent} is in use by {who}, which is still running; "
                       "--force only breaks the lock of a run that is gone")
    path.unlink(missing_ok=True)
    log(f"xft: broke the stale lock of {who} on {path.parent}")

