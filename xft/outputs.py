"""Output folders that never clobber a user's files (`xft convert ...`, the run's export).

Every artifact is written into a hidden staging folder beside OUT, named
`.{OUT.name}.xft-tmp-{pid}`, which holds an `.xft-incomplete` marker while it is
being filled; only when complete is it moved into place. A previous OUT being
replaced (`--overwrite`, or the work dir's own `hf/`) is first renamed to
`.{OUT.name}.xft-old-{pid}`. No user file has such names, so removing leftovers
(from a killed run) touches only folders xft made: they must carry the marker or
the `-old-` name and belong to a process that is gone.

`check_output` refuses, before any work: an OUT that is not empty (unless
overwriting), and an OUT equal to, inside, or holding one of the command's inputs.
`incomplete_reason` lets the loaders refuse a staging folder or a half-moved OUT.
"""

import contextlib
import errno
import os
import re
import shutil
from pathlib import Path

from xft.errors import XftError

MARKER = ".xft-incomplete"
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.xft-(?P<kind>tmp|old)-(?P<pid>\d+)$")


def staging_name(out, kind, pid=None):
    return f".{out.name}.xft-{kind}-{os.getpid() if pid is None else pid}"


def check_output(out, inputs=(), overwrite=False, what="OUT"):
    """The absolute OUT path, after refusing an OUT that would clobber something."""
    out = Path(out).resolve()  # '.' and 'a/..' get a real name
    if out.exists() and not out.is_dir():
        raise XftError(f"{what} {out} is a file, not a folder")
    for given in inputs:
        if given is None or not Path(given).exists():
            continue  # a hub id, or a missing path the command reports itself
        source = Path(given).resolve()
        if out == source or source in out.parents:
            raise XftError(f"{what} {out} is {'the same as' if out == source else 'inside'} "
                           f"the input {source}; write the output somewhere else")
        if source.is_relative_to(out):
            raise XftError(f"{what} {out} holds the input {source}; write the output "
                           "somewhere else")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise XftError(f"{what} {out} is not empty; give a new or empty folder, or "
                           "--overwrite to replace it")
        if Path.cwd().resolve().is_relative_to(out):
            raise XftError(f"{what} {out} holds the current directory; --overwrite cannot "
                           "replace it")
    return out


def write_output(out, write):
    """Call `write(tmp)` to fill a staging folder for OUT, then move it in; return OUT.
    A failure removes the staging folder and leaves OUT as it was."""
    tmp = staging_dir(out)
    try:
        with disk_full_as_error(tmp):
            write(tmp)
    except BaseException:
        discard(tmp)
        raise
    return publish(tmp, out)


def staging_dir(out):
    """A fresh staging folder for OUT, with the marker; old leftovers of OUT removed."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out.parent, out.name)
    tmp = out.parent / staging_name(out, "tmp")
    if tmp.exists():  # this very process failed before: its own leftover
        shutil.rmtree(tmp)
    tmp.mkdir()
    (tmp / MARKER).write_text("written by xft; the folder is incomplete while this file "
                              "exists\n", encoding="utf-8")
    return tmp


def publish(tmp, out):
    """Move the finished staging folder `tmp` in as OUT; return OUT.

    OUT missing or empty: `tmp` is renamed to it (an empty folder that is the current
    directory gets the files moved in, the marker first and removed last, so a cut
    leaves it marked incomplete). OUT with files (checked by `check_output`): renamed
    to a backup, replaced, and the backup removed only then.
    """
    tmp, out = Path(tmp), Path(out).resolve()
    if out.is_dir() and not any(out.iterdir()):
        if Path.cwd().resolve() == out:
            os.replace(tmp / MARKER, out / MARKER)
            for entry in tmp.iterdir():
                os.replace(entry, out / entry.name)
            tmp.rmdir()
            (out / MARKER).unlink()
            return out
        out.rmdir()
    (tmp / MARKER).unlink()
    if out.exists():
        old = out.parent / staging_name(out, "old")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    return out


def discard(tmp):
    """Remove a staging folder this process made (after a failed write)."""
    shutil.rmtree(tmp, ignore_errors=True)


def remove_leftovers(parent, name=None):
    """Remove staging and backup folders in `parent` (for OUT `name`, or any) that xft
    made and whose process is gone; return how many."""
    removed = 0
    for path in Path(parent).iterdir() if Path(parent).is_dir() else []:
        match = _LEFTOVER.match(path.name)
        if (not match or not path.is_dir() or (name is not None and match["name"] != name)
                or (int(match["pid"]) != os.getpid() and process_alive(match["pid"]))):
            continue
        if match["kind"] == "tmp" and not (path / MARKER).is_file():
            continue  # not ours after all
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def incomplete_reason(path):
    """Why `path` is not a finished artifact (a staging folder, or one cut off while
    being moved in), or None."""
    path = Path(path)
    if _LEFTOVER.match(path.name):
        return (f"{path} is a temporary folder left by an xft write that did not finish; "
                "it is not a usable model")
    if (path / MARKER).is_file():
        return f"{path} is incomplete (an xft write into it was cut off); write it again"
    return None


def process_alive(pid):
    """Whether process `pid` runs on this host (a zombie, exited but not yet reaped by
    its parent, does not: it holds nothing any more)."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True  # someone else's process
    try:  # Linux: the state letter follows the parenthesised command name
        state = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def require_model_dir(path, what="model"):
    """Refuse, in words, a local model/adapter folder that is missing, unfinished or not
    one; a name that may be a hub id passes (the hub loader reports on it)."""
    path = str(path)
    local = Path(path).expanduser()
    if not local.exists():
        if path.startswith((".", "/", "~")) or path.count("/") > 1 or path.endswith("/"):
            raise XftError(f"{what} directory {path} does not exist")
        return
    reason = incomplete_reason(local)
    if reason is not None:
        raise XftError(reason)
    if not local.is_dir():
        raise XftError(f"{what} {path} is a file; give the folder that holds config.json")
    if not any((local / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise XftError(f"{path} is not a complete {what} folder (no config.json or "
                       "adapter_config.json)")


@contextlib.contextmanager
def disk_full_as_error(path):
    """Within: running out of disk space is one XftError naming the file (the one the
    OSError names, else `path`) and saying so. Libraries report it in their own words
    (safetensors: 'StorageFull'; torch.save: see `save_torch`), hence the checks."""
    try:
        yield
    except XftError:
        raise
    except Exception as e:
        cause = _disk_full_cause(e)
        if cause is None:
            raise
        where = getattr(cause, "filename", None) or path
        raise XftError(f"{where}: no space left on device") from e


def _disk_full_cause(error):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return error
        text = str(error)
        if "No space left on device" in text or "StorageFull" in text:
            return error
        error = error.__cause__ or error.__context__
    return None


class _RecordingFile:
    """A binary file that remembers the OSError of a failed write: torch.save turns
    it into 'RuntimeError: ... unexpected pos', which names neither file nor cause."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data):
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        self.file.flush()


def save_torch(obj, path):
    """torch.save to `path`, flushed to disk; a full disk is a one-line XftError and
    the partial file is removed."""
    import torch

    path = Path(path)
    try:
        with disk_full_as_error(path), open(path, "wb") as f:
            recording = _RecordingFile(f)
            try:
                torch.save(obj, recording)
            except RuntimeError:
                if recording.error is not None:
                    raise recording.error from None
                raise
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
