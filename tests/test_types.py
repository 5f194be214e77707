"""lape_lib is typed (it ships py.typed): mypy must accept the whole package."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_accepts_the_package() -> None:
    from mypy import api

    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml"), str(ROOT / "lape_lib")])
    assert status == 0, stdout + stderr
    assert "Success: no issues found" in stdout
