"""Files that are never half-written, run folders that one run writes at a time, and content hashes.

The floor every module that writes or checks a file stands on; it imports nothing of lape_lib
(and torch only inside ``hash_tensor``), so data, hub and checkpoint share it without climbing
to the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

LOCK = ".lock"  # in a run folder while a run writes there: {"pid", "command"}


def git_commit(root: str | os.PathLike, short: bool = True, mark_dirty: bool = False) -> str | None:
    """The commit checked out at ``root`` (its short form by default), or None outside a git checkout
    (an installed package) or without git. ``mark_dirty``: append ``-dirty`` (git describe's mark)
    when tracked files differ from that commit, so a record never credits a commit with edits it lacks."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()

    try:
        out = git("rev-parse", *(["--short"] if short else []), "HEAD")
        dirty = mark_dirty and bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return None
    return (out + "-dirty" if dirty else out) or None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Delete temp files of ``path`` left by writers that were killed (their pid is gone)."""
    for tmp in path.parent.glob(f".{path.name}.tmp*"):
        pid = tmp.name[len(f".{path.name}.tmp"):].partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temp file beside ``path``, fsync it, then rename it over ``path``.

    The temp name is unique (pid and a random part), so concurrent writers never share one, and
    temp files of killed writers are removed on the next write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp{os.getpid()}-", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """``obj`` as indented JSON at ``path``, atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)))


def lock_run_folder(out: Path) -> Path:
    """Create ``out`` and take its lock, so that two runs never write one folder; returns the lock file.

    Refused, naming the holder's pid and command, while a live process holds it; a lock left by
    a killed run is taken over. Also the early check of ``out`` itself: a path that is a file or
    cannot be written fails here, before any data is read, not after the first epoch.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"output folder {str(out)!r} cannot be created ({err.strerror}); choose a writable folder") from None
    lock = out / LOCK
    if lock.is_dir():
        raise ValueError(f"{lock} is a folder, not a run's lock file; remove it (nothing of a run is kept there)")
    me = json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv)})
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
            except (OSError, ValueError):
                holder = {}
            pid = holder.get("pid")
            if isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
                raise ValueError(f"output folder {str(out)!r} is in use by another run (pid {pid}: {holder.get('command')}); "
                                 f"wait for it to end, or choose another folder. If pid {pid} is no lape_lib run (a pid reused "
                                 f"after a reboot), delete {lock}") from None
            lock.unlink(missing_ok=True)  # left by a run that was killed
            continue
        except OSError as err:
            raise ValueError(f"output folder {str(out)!r} is not writable ({err.strerror}); choose a writable folder") from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return lock
    raise ValueError(f"could not take the lock {lock}; another run may be starting in {str(out)!r}")


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def hash_tensor(h: Any, key: str, tensor: Any, layout: bool = True) -> None:
    """Feed one named tensor into the hash ``h``: its name, with ``layout`` its dtype and shape, then its bytes.

    The one way lape_lib hashes tensors: checkpoint digests (with layout), the decoded-image cache
    and a dataset's content identity (without: those values are recorded in results files and
    checkpoints since results schema 2, so their form stays).
    """
    import torch

    t = tensor.detach().cpu().contiguous()
    h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode() if layout else key.encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def tensors_sha256(named: Iterable[tuple[str, Any]], layout: bool = True) -> str:
    """sha256 over ``(name, tensor)`` pairs in the order given (see ``hash_tensor``)."""
    h = hashlib.sha256()
    for key, tensor in named:
        hash_tensor(h, key, tensor, layout)
    return h.hexdigest()
