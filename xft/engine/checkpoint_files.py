"""Writing checkpoints so that a kill never leaves one that looks complete but is not.

Both engines follow the same rule: a checkpoint only becomes visible as
complete after every byte of it is on disk. MMEngine's `iter_N.pth` is written
under a temporary name and renamed (a rename within a directory is atomic);
a Hugging Face `checkpoint-N` folder gets a marker file once Trainer has
written everything into it. `--resume` without a path then takes the newest
checkpoint that passes these tests and passes over the rest.
"""

import os
import zipfile
from pathlib import Path

from xft.errors import XftError
from xft.outputs import save_torch

TMP_SUFFIX = ".tmp"


def fsync_file(path):
    """Flush a written file to the disk (a kill does not need it; a power cut does)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path):
    """fsync every file under `path` (a file or a directory)."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        fsync_file(file)


def atomic_write_text(path, text):
    """Replace `path` with `text` in one step: a reader sees the old or the new content."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(text, encoding="utf-8")
    fsync_file(tmp)
    os.replace(tmp, path)


def complete_torch_file(path):
    """Whether `path` is a whole torch.save archive.

    torch.save writes a zip file whose central directory comes last, so a file
    cut off while being written fails to open as a zip. This catches checkpoints
    left by writers that do not rename atomically (e.g. MMEngine's own hook).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return len(archive.namelist()) > 0
    except (OSError, zipfile.BadZipFile):
        return False


def numbered_checkpoints(work_dir, pattern):
    """(N, path) of every entry of `work_dir` whose name `pattern` matches (group 1 = N),
    sorted by N, complete or not."""
    found = []
    for path in Path(work_dir).iterdir() if Path(work_dir).is_dir() else []:
        match = pattern.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def newest_complete(checkpoints, is_complete, log=print):
    """The path of the highest-numbered complete checkpoint (as str), or None; each
    newer incomplete one is named as it is passed over."""
    for _, path in reversed(checkpoints):
        if is_complete(path):
            return str(path)
        log(f"--resume: passing over {path}: incomplete (cut off while being written)")
    return None


def remove_old(checkpoints, step, keep, is_complete, remove):
    """After checkpoint `step` is complete, keep it and the newest `keep` - 1 complete
    older ones (`keep` 0: all); `remove` the other older ones, incomplete ones included."""
    if keep <= 0:
        return
    older = [path for n, path in checkpoints if n < step]
    complete = [path for path in older if is_complete(path)]
    kept = complete[max(0, len(complete) - (keep - 1)):]
    for path in older:
        if path not in kept:
            remove(path)


def pick_resume(resume, work_dir, checkpoints, is_complete, what):
    """`--resume` → None, or the checkpoint to load: the newest complete one of
    `checkpoints` when `resume` is True, else the path given, which must be complete."""
    if resume is None:
        return None
    if resume is True:
        checkpoint = newest_complete(checkpoints, is_complete)
        if checkpoint is None:
            raise XftError(f"--resume: no complete {what} in {work_dir}")
        return checkpoint
    if not Path(resume).exists():
        raise XftError(f"--resume: checkpoint {resume} does not exist")
    if not is_complete(Path(resume)):
        raise XftError(f"--resume: {resume} is not a complete {what}: not a checkpoint at "
                       f"all, or cut off while being written")
    return str(resume)


def atomic_torch_save(obj, path):
    """torch.save `obj` to `path` under a temporary name, flushed, then renamed."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    save_torch(obj, tmp)  # fsynced; a full disk is one line
    os.replace(tmp, path)
