"""The Colab path, with a stand-in for google.colab (no Colab, no Drive here)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import lape_lib.colab as colab


@pytest.fixture
def fake_colab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    mounted: list[str] = []
    drive = types.SimpleNamespace(mount=mounted.append)
    package = types.ModuleType("google.colab")
    package.drive = drive  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "google.colab", package)
    monkeypatch.setattr(colab, "DRIVE_ROOT", tmp_path / "MyDrive" / "lape-workbook")
    monkeypatch.delenv("LAPE_CACHE", raising=False)
    return mounted


def test_off_colab_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert colab.storage("../runs/notebooks", None) == "../runs/notebooks"
    assert colab.storage("../runs/notebooks", False) == "../runs/notebooks"
    with pytest.raises(ValueError, match="use_drive=True mounts Google Drive, which only Colab has"):
        colab.storage("../runs/notebooks", True)


def test_on_colab_outputs_and_cache_go_to_drive(fake_colab: list[str], tmp_path: Path) -> None:
    import os

    out = colab.storage("../runs/notebooks", None)  # None: yes on Colab
    assert fake_colab == [colab.DRIVE_MOUNT]
    assert Path(out) == tmp_path / "MyDrive" / "lape-workbook" / "runs" / "notebooks" and Path(out).is_dir()
    assert os.environ["LAPE_CACHE"] == str(tmp_path / "MyDrive" / "lape-workbook" / "cache")
    assert colab.storage("../runs/notebooks", False) == "../runs/notebooks"  # asked not to


def test_every_notebook_offers_drive_and_installs_from_one_source() -> None:
    import nbformat

    from lape_lib.workbook import NOTEBOOK_DIR, NOTEBOOKS

    installs = set()
    for name in NOTEBOOKS:
        nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
        installs.add(nb.cells[1].source)
        check = next(c for c in nb.cells if "check(globals()" in c.source)
        assert "storage(p.output_dir, p.use_drive)" in check.source, name
    assert len(installs) == 1, "the install cell (repository URL and ref) is the same in every notebook"
