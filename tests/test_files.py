"""Files (lape_lib.files): atomic writes, the run-folder lock, tensor hashes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import tiny

from lape_lib.files import LOCK, atomic_write, hash_tensor, tensors_sha256
from lape_lib.train import train


def test_a_second_run_in_a_folder_in_use_is_refused(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK).write_text(json.dumps({"pid": holder.pid, "command": "python -m lape_lib.train --out x"}))
        with pytest.raises(ValueError, match=rf"is in use by another run \(pid {holder.pid}: python -m lape_lib.train --out x\)"):
            train(tiny(out_dir=str(tmp_path)))
        assert not (tmp_path / "results.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale, the next run takes it over and releases it at the end.
    assert train(tiny(epochs=1, warmup_epochs=0, cooldown_epochs=0, out_dir=str(tmp_path)))["done"]
    assert not (tmp_path / LOCK).exists()


def test_atomic_writes_use_unique_temps_and_remove_dead_writers_leftovers(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".results.json.tmp{dead.pid}-abc"
    leftover.write_text("half a file")
    mine = tmp_path / f".results.json.tmp{os.getpid()}-live"  # a live writer's temp stays
    mine.write_text("being written")
    atomic_write(tmp_path / "results.json", lambda tmp: tmp.write_text("{}"))
    assert (tmp_path / "results.json").read_text() == "{}"
    assert not leftover.exists() and mine.exists()


@pytest.mark.parametrize("kind", ["folder", "live pid"])
def test_a_lock_that_is_a_folder_or_a_foreign_pid_says_what_to_do(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "run"
    (out / LOCK).mkdir(parents=True) if kind == "folder" else (out.mkdir(), (out / LOCK).write_text(json.dumps({"pid": 1, "command": "init"})))
    needle = "is a folder, not a run's lock file; remove it" if kind == "folder" else "If pid 1 is no lape_lib run (a pid reused after a reboot), delete"
    with pytest.raises(ValueError, match=re.escape(needle)):
        train(tiny(out_dir=str(out)))


def test_one_tensor_hash_sees_names_values_and_layout() -> None:
    """The hash every module uses: a changed value, name, dtype or shape changes it; ``layout=False``
    (a dataset's identity, recorded since results schema 2) is the name and raw bytes alone."""
    t = torch.arange(6, dtype=torch.int64)
    base = tensors_sha256([("x", t)])
    assert base == tensors_sha256([("x", t.clone())])
    changed = [tensors_sha256([("x", t + (torch.arange(6) == 5))]), tensors_sha256([("y", t)]),
               tensors_sha256([("x", t.to(torch.int32).to(torch.int64).view(2, 3))]), tensors_sha256([("x", t.to(torch.int32))])]
    assert len({base, *changed}) == 5
    h = hashlib.sha256(b"x" + t.numpy().tobytes())
    assert tensors_sha256([("x", t)], layout=False) == h.hexdigest()  # the identity's form, unchanged since schema 2
    plain = hashlib.sha256()
    hash_tensor(plain, "x", t[::2])  # a strided view hashes as its values
    assert plain.hexdigest() == tensors_sha256([("x", t[::2].contiguous())])


def test_git_commit_names_the_checkout_and_none_outside_one(tmp_path: Path) -> None:
    from lape_lib.files import git_commit

    root = Path(__file__).resolve().parents[1]
    full = git_commit(root, short=False)
    assert full is not None and len(full) == 40 and full.startswith(git_commit(root) or "-")
    assert git_commit(tmp_path) is None  # an installed package: no checkout, no commit
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("1")
    for args in (["init", "-q"], ["add", "a.txt"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True)
    commit = git_commit(repo)
    assert commit is not None and git_commit(repo, mark_dirty=True) == commit
    (repo / "new.txt").write_text("untracked files do not count")
    assert git_commit(repo, mark_dirty=True) == commit
    (repo / "a.txt").write_text("2")
    assert git_commit(repo, mark_dirty=True) == commit + "-dirty" and git_commit(repo) == commit
