"""The Colab path, with a stand-in for google.colab (no Colab, no Drive here)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

import lape_lib.colab as colab

ROOT = Path(__file__).resolve().parents[1]


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


def test_the_install_source_is_pinned_to_this_release() -> None:
    """LAPE_SOURCE names a fixed ref: the tag of pyproject's version (or a full commit), never a branch."""
    import importlib.util
    import tomllib

    spec = importlib.util.spec_from_file_location("set_source", ROOT / "scripts" / "set_source.py")
    set_source = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(set_source)
    specs = set(set_source.sources().values())
    assert len(specs) == 1
    ref = set_source.pinned_ref(specs.pop())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert ref == f"v{version}" or len(ref) == 40, f"LAPE_SOURCE pins {ref}, but this is version {version}"
    for bad in ("git+https://github.com/o/r@main", "git+https://github.com/o/r", "https://github.com/o/r@v1.0.0",
                "git+https://github.com/o/r@abc123"):
        with pytest.raises(ValueError, match="tag vX.Y.Z or a 40-hex commit"):
            set_source.pinned_ref(bad)
