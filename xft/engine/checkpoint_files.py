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
