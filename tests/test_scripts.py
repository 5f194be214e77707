"""Helper scripts under scripts/ whose output README cites."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ci_record_reads_the_install_line_and_both_pytest_passes() -> None:
    log = "\n".join([
        "installed in 98 s: torch 2.9.1 | lape_lib 0.1.0",
        "CI: running README's test command: bash scripts/install.sh && .venv/bin/python -m pytest",
        "........ [100%]",
        "=========== 669 passed in 750.12s (0:12:30) ===========",
        "CI: the suite again in a clone without ../shared and without network (scripts/hermetic_check.sh)",
        "FAILED tests/test_data.py::test_x - AssertionError: 3 passed in 2.0s is not a summary",
        "1 failed, 667 passed, 1 skipped in 700.02s (0:11:40)",
    ])
    got = load_script("ci_record").parse(log)
    assert got["install_s"] == 98 and got["installed"] == "torch 2.9.1 | lape_lib 0.1.0"
    assert [p["counts"] for p in got["pytest_passes"]] == [{"passed": 669}, {"failed": 1, "passed": 667, "skipped": 1}]
    assert [p["seconds"] for p in got["pytest_passes"]] == [750.12, 700.02]
    assert load_script("ci_record").parse("no summary here")["pytest_passes"] == []


def test_paired_variants_takes_each_ratio_within_a_round(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("paired_variants", ROOT / "benchmarks" / "paired_variants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--rounds", "2", "--steps", "1", "--batch-size", "8", "--out", str(tmp_path / "v.json")])
    assert json.loads((tmp_path / "v.json").read_text())["rounds"] == out["rounds"]
    assert len(out["rounds"]) == 2 and all(set(r) == set(module.VARIANTS) for r in out["rounds"])
    for r, ratio in zip(out["rounds"], out["ratios"]["bf16 / fp32"]):
        assert ratio == round(r["bf16"] / r["fp32"], 3)
    assert out["command"].endswith("--out " + str(tmp_path / "v.json"))
