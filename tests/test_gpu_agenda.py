"""The GPU agenda (scripts/gpu_agenda.py, issue 22), proved on the CPU: its dry run goes through every
phase and leaves an $OUT the device would bring back whole, and a kill at any second leaves files
that parse. Its planning and judging rules are tested directly."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lape_lib.checkpoint import load_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_agenda.py"
spec = importlib.util.spec_from_file_location("gpu_agenda", SCRIPT)
assert spec is not None and spec.loader is not None
agenda = importlib.util.module_from_spec(spec)
spec.loader.exec_module(agenda)

MIB = 1024 * 1024


def assert_out_comes_back(out: Path) -> None:
    """The device's rule for $OUT: at most 8 files, 16 MiB each, 2 folders deep, plain names."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert 0 < len(files) <= 8, [p.name for p in files]
    for p in files:
        rel = p.relative_to(out)
        assert len(rel.parts) <= 3 and all(agenda.OUT_NAME.match(part) for part in rel.parts), rel
        assert p.stat().st_size <= 16 * MIB, (rel, p.stat().st_size)


def parsed(out: Path) -> dict[str, Any]:
    """Every JSON file in $OUT, parsed (a half-written one fails here)."""
    return {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}


def run(out: Path, work: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), "--work", str(work), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_dry_run_goes_through_every_phase_and_leaves_a_valid_out(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    proc = run(out, work, "--modes", "eager_bf16", "cuda_graph", "stacked", "compile")
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-3000:]
    assert_out_comes_back(out)
    files = parsed(out)
    assert set(files) == {"agenda.json", "controls-results.json", "controls-summary.json"}
    record = files["agenda.json"]
    assert record["done"] and record["dry_run"] and "error" not in record
    env, modes = record["phases"]["env"], record["phases"]["modes"]
    assert env["train_flops_per_image"] > 1e9  # ViT-Lite-7/4: about 1.5 GFLOP per image, forward and backward
    assert modes["cuda_graph"]["skipped"] == "needs a CUDA GPU" and not modes["cuda_graph"]["passed"]
    for name in ("eager_bf16", "stacked", "compile"):
        m = modes[name]
        assert m["passed"] and m["finite"] and m["n_models"] == 9 and m["images_per_s"] > 0, (name, m)
    # fp32 on the CPU: stacking and compiling compute the eager losses up to rounding
    assert modes["stacked"]["max_loss_gap"] < 1e-4 and modes["compile"]["max_loss_gap"] < 1e-4
    assert record["picked_mode"] in ("eager_bf16", "stacked", "compile")
    rows = record["phases"]["reference"]["rows"]
    assert {r["mode"] for r in rows} == {"eager_bf16", "stacked", "compile"} and all(r["speedup_vs_reference"] > 0 for r in rows)
    have_cifar = "data_source" in env
    for style in ("native", "t4"):
        notebooks = record["phases"]["notebooks"][style]["notebooks"]
        assert len(notebooks) == 5
        needs_no_cifar = {"01_affine_argument.ipynb", "03_per_layer_pe.ipynb", "04_pe_types_and_joins.ipynb"}
        for name, row in notebooks.items():
            if have_cifar or name in needs_no_cifar:
                assert row["ok"], (style, name, row.get("error"), row.get("traceback"))
            else:
                assert row["ok"] or row["error"]  # recorded, with the failing cell
    controls = record["phases"]["controls"]
    assert controls["recipe"] == "shortened" and "NOT the paper's recipe" in controls["note"]
    assert "--checkpoint-every 0" in controls["command"] and controls["run"]["rc"] == 0
    results = files["controls-results.json"]
    assert results["done"] and len(results["arms"]) == 9
    assert not (work / "controls" / "checkpoint.pt").exists()  # none written: the run was not cut short
    assert sorted(controls["weights"]) == ["learnable-add-s0.safetensors", "learnable-add-std1.0-s0.safetensors",
                                           "learnable-lape-s0.safetensors"]
    assert load_model(out / "learnable-add-std1.0-s0.safetensors").cfg.pe_init_std == 1.0
    assert (out / "agenda.log").read_text().count("mode ") >= 4


@pytest.mark.parametrize("when", ["early", "training"])
def test_a_kill_at_any_second_leaves_files_that_parse(tmp_path: Path, when: str) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    proc = run(out, work, "--modes", "eager_bf16", "--skip", "reference", "notebooks")
    watched = out / ("agenda.json" if when == "early" else "controls-results.json")
    deadline = time.monotonic() + 300
    while not watched.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(when).uniform(0, 1.5))  # a second of no one's choosing, repeatable
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    time.sleep(1.0)
    left = subprocess.run(["pgrep", "-f", str(work)], capture_output=True, text=True).stdout.split()
    assert not left, f"processes of the killed agenda still running: {left}"  # its children die with it
    assert_out_comes_back(out)
    files = parsed(out)
    assert "agenda.json" in files and files["agenda.json"]["schema"] == 1
    if when == "training":
        assert files["controls-results.json"]["arms"]  # the mirror: a whole results.json, however far it got
    # The next agenda in the same $OUT clears a killed one's temp file, so it cannot take one of the 8 places.
    (out / ".agenda.json.tmp1-x").write_text("{")  # a temp name of lape_lib.files.atomic_write
    again = run(out, work, "--modes", "eager_bf16", "--skip", "reference", "notebooks", "controls", "--deadline-s", "60")
    again.communicate(timeout=300)
    assert not list(out.glob(".*.tmp*")) and parsed(out)["agenda.json"]["done"]


def test_modes_pass_only_when_their_losses_match_eagers() -> None:
    eager = [{"a": 2.30, "b": 2.31}] * 6
    modes: dict[str, Any] = {
        "eager_bf16": {"images_per_s": 100.0, "finite": True, "losses": eager, "n_models": 2},
        "eager_fp16": {"images_per_s": 900.0, "finite": True, "losses": eager, "n_models": 2},
        "cuda_graph": {"images_per_s": 500.0, "finite": True, "losses": [{"a": 2.30, "b": 2.31 + 0.2}] * 6, "n_models": 2},
        "stacked": {"images_per_s": 300.0, "finite": True, "losses": [{"a": 2.30 + 0.01, "b": 2.31}] * 6, "n_models": 2},
        "compile": {"images_per_s": 800.0, "finite": False, "losses": eager, "n_models": 2},
        "reduce_overhead": {"error": "RuntimeError: boom"},
    }
    agenda.judge_modes(modes)
    assert [n for n, m in modes.items() if m["passed"]] == ["eager_bf16", "eager_fp16", "stacked"]
    assert modes["cuda_graph"]["max_loss_gap"] == pytest.approx(0.2) and "tolerance" in modes["cuda_graph"]["why"]
    assert modes["compile"]["why"] == "a loss was not finite"
    assert agenda.pick_mode(modes) == "stacked"  # the fastest passing bf16 mode; fp16 only when nothing else passed
    assert agenda.pick_mode({"eager_fp16": modes["eager_fp16"]}) == "eager_fp16"
    assert agenda.pick_mode({"x": {"passed": False}}) is None


def test_the_plan_fits_the_time_left() -> None:
    # Fast enough for the whole recipe for one seed: exactly that, for the lowest seed not yet done.
    full = agenda.plan_controls(2e6, 400.0, 50_000, 10_000, {0, 2}, dry_run=False)
    assert (full["recipe"], full["seeds"], full["epochs"], full["warmup"], full["cooldown"], full["mix_off"]) == (
        "paper", [1], 300, 10, 10, 175)
    # Slower: seeds 0-2 for the epochs that fit, the schedule scaled by E/300.
    short = agenda.plan_controls(60_000, 240.0, 50_000, 10_000, set(), dry_run=False)
    epoch_s = 9 * (390 * 128 + 10_000 / 3) / 60_000
    assert short["recipe"] == "shortened" and short["seeds"] == [0, 1, 2] and short["epochs"] == int(240 // epoch_s)
    e = short["epochs"]
    assert (short["warmup"], short["cooldown"], short["mix_off"]) == (max(1, round(10 * e / 300)), round(10 * e / 300),
                                                                      round(175 * e / 300))
    assert "NOT the paper's recipe" in short["note"]
    # Too slow for two epochs: not run, and said why.
    assert agenda.plan_controls(1_000, 60.0, 50_000, 10_000, set(), dry_run=False)["recipe"] is None


def test_the_session_script_runs_the_agenda_into_out(tmp_path: Path) -> None:
    """`bash scripts/gpu_session.sh agenda`, the device's one command, with $OUT and the deadline passed on."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "AGENDA_DEADLINE_S": "120"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_session.sh"), "agenda", "--dry-run", "--work", str(tmp_path / "w"),
                           "--modes", "eager_bf16", "--skip", "reference", "notebooks", "controls"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = parsed(tmp_path / "out")["agenda.json"]
    assert record["done"] and record["deadline_s"] == 120 and record["phases"]["modes"]["eager_bf16"]["passed"]
    assert record["phases"]["controls"] == {"skipped": "--skip"}
