"""The GPU agenda: everything a lent GPU should measure, in one command under one deadline.

    python3 scripts/gpu_agenda.py --out "$OUT" [--deadline-s 500] [--dry-run]
    (on the device: ``bash scripts/gpu_session.sh agenda``)

A lent GPU comes for 15 minutes in all, one command of at most 10, and only the files left in
``$OUT`` come back (at most 8, flat names). So this script runs every phase as a child process
under its own time limit, carries on when a phase fails, and rewrites its files in ``$OUT``
atomically as they grow: whatever second it is killed at, what it leaves there parses.

Phases, in order (each one's record lands in ``agenda.json`` under ``phases``):

0. ``env``: versions, the GPU, its bf16 peak, ViT-Lite-7/4's training FLOPs per image, and
   CIFAR-10 decoded from ``data/`` (the archive carried there).
1. ``modes``: every training mode (eager bf16, eager fp16 + GradScaler, compile,
   reduce-overhead, CUDA graph, stacked seeds, stacked + graph, stacked + compile) for a few
   steps of the controls' nine models (add, add@1.0, lape x seeds 0-2), each in its own process
   so a crash costs only that mode: images/s, peak memory, whether every loss is finite, the
   error if any. Dropout is off, so a compiled, graphed or stacked mode *passes* only if its
   losses over the first ``COMPARED_STEPS`` steps stay within ``LOSS_TOLERANCE`` of eager's at
   the same precision. The fastest passing mode trains phase 4.
2. ``reference``: the reference loop of ``benchmarks/throughput.py`` (fp32, eager, PIL
   augmentation in DataLoader workers), so each mode has its speed-up over it and its fraction
   of the GPU's bf16 peak.
3. ``notebooks``: all five notebooks executed in smoke mode on the GPU inside one process (no
   Jupyter kernel: the device has none), once as this GPU runs them and once as a T4 would
   (no native bf16: fp16 with a gradient scaler); each failing cell is recorded.
4. ``controls``: ``add``, ``add@1.0`` and ``lape`` on all of CIFAR-10 with the recipe's
   augmentation, in the picked mode, with the minutes left. If the measured speed fits the
   whole 300 + 10-epoch recipe for one seed of the three arms, it runs exactly that for the
   lowest seed not yet under ``results/gpu/``; otherwise seeds 0-2 for E epochs, E chosen from
   the speed, the schedule (warm-up, cosine, cooldown, mixup-off epoch) scaled by E/300:
   not the paper's recipe, and the record says so. ``results.json`` is mirrored into ``$OUT``
   after every epoch; no checkpoint is written unless the run is cut short; at the end the
   multi-arm report and the weights of the run's first seed (seed 0 in a shortened run; names
   without '@').

``--dry-run`` (or ``AGENDA_DRY_RUN=1``) runs the same phases on the CPU at tiny sizes (toy data
for phase 4), so CI proves the flags, paths and files; the GPU-only modes are recorded as skipped.

The parent process imports no torch: a broken torch or a CUDA crash costs a phase, not the agenda.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import threading
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_FILES = ("agenda.log", "agenda.json", "controls-results.json", "controls-summary.json")  # + up to 3 weights: 7 of 8
OUT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")  # what the device's $OUT brings back
CONTROL_JOINS = ("add", "add@1.0", "lape")
CONTROL_SEEDS = (0, 1, 2)
COMPARED_STEPS = 5
LOSS_TOLERANCE = 0.05  # |loss - eager's loss|, bf16 autocast: a wrong graph or stack is off by far more
RECIPE_EPOCHS, RECIPE_WARMUP, RECIPE_COOLDOWN, RECIPE_MIX_OFF = 300, 10, 10, 175
RECIPE_EPOCHS_TOTAL = RECIPE_EPOCHS + RECIPE_COOLDOWN
FULL_RECIPE_MARGIN = 1.25
MODES_BUDGET_S = 220  # phase 1 starts no new mode after this long (a cold compile alone can take a minute)
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}  # dense, NVIDIA's sheets
# name: TrainConfig fields over the base; "cuda": needs a GPU
MODES: dict[str, dict[str, Any]] = {
    "eager_bf16": {"precision": "bf16"},
    "eager_fp16": {"precision": "fp16"},
    "cuda_graph": {"precision": "bf16", "cuda_graph": True, "cuda": True},
    "stacked": {"precision": "bf16", "stack_seeds": True},
    "stacked_graph": {"precision": "bf16", "stack_seeds": True, "cuda_graph": True, "cuda": True},
    "compile": {"precision": "bf16", "compile": True},
    "reduce_overhead": {"precision": "bf16", "compile": True, "compile_mode": "reduce-overhead", "cuda": True},
    "stacked_compile": {"precision": "bf16", "stack_seeds": True, "compile": True},
}
SKIPPABLE = ("reference", "notebooks", "controls")



def _die_with_parent() -> None:
    """In a child, before it runs: be killed when the agenda dies, even by SIGKILL (Linux's
    PR_SET_PDEATHSIG), so a killed agenda leaves no training running."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the parent's own time limits still stop its children


def _load_files() -> Any:
    """lape_lib/files.py by its path: the package's atomic writes, without the package's
    ``__init__`` (which imports torch, and this process keeps clear of torch)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lape_files", ROOT / "lape_lib" / "files.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


files = _load_files()


def write_bytes(path: Path, data: bytes) -> None:
    """Atomic (lape_lib.files.atomic_write): a kill leaves the old file or the new, never half."""
    files.atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, json.dumps(obj, indent=1, default=str).encode())


# ---------------------------------------------------------------- the parent: phases, deadline, $OUT


class Agenda:
    def __init__(self, out: Path, work: Path, deadline_s: float, dry_run: bool) -> None:
        self.out, self.work, self.dry_run = out, work, dry_run
        self.started = time.monotonic()
        self.deadline = self.started + deadline_s
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        for leftover in out.glob(".*.tmp*"):  # a killed earlier agenda's: each would take one of $OUT's 8 places
            leftover.unlink()
        self.log_file = open(out / "agenda.log", "a", buffering=1)
        self.record: dict[str, Any] = {"schema": 1, "dry_run": dry_run, "deadline_s": deadline_s, "done": False,
                                       "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "phases": {}}
        self.save()

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, line: str) -> None:
        stamped = f"[{time.monotonic() - self.started:6.1f}s] {line}"
        print(stamped, flush=True)
        self.log_file.write(stamped + "\n")

    def save(self) -> None:
        write_json(self.out / "agenda.json", self.record)

    def phase(self, name: str, value: Any) -> None:
        self.record["phases"][name] = value
        self.save()

    def child(self, args: list[str], limit_s: float, result: Path | None = None, env: dict[str, str] | None = None,
              poll: Any = None) -> dict[str, Any]:
        """Run ``python3 gpu_agenda.py <args>`` (or any argv starting with '-m') in its own process group,
        its output into the log, killed after ``limit_s``; returns rc, seconds and the JSON it wrote."""
        limit_s = max(1.0, min(limit_s, self.left()))
        argv = [sys.executable, *args] if args[0] == "-m" else [sys.executable, str(Path(__file__).resolve()), *args]
        t0 = time.monotonic()
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # this checkout's lape_lib
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **(env or {})},
                                start_new_session=True, preexec_fn=_die_with_parent)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.log("  " + line.rstrip())

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        while proc.poll() is None:
            if poll is not None:
                poll()
            if time.monotonic() - t0 > limit_s:
                timed_out = True
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                break
            time.sleep(0.5)
        reader.join(5)
        if poll is not None:
            poll()
        out: dict[str, Any] = {"rc": proc.returncode, "seconds": round(time.monotonic() - t0, 1), "timed_out": timed_out}
        if timed_out:
            out["error"] = f"stopped at its time limit of {limit_s:.0f} s"
        if result is not None and result.exists():
            try:
                out.update(json.loads(result.read_text()))
            except ValueError as err:
                out["error"] = f"unreadable result {result.name}: {err}"
        elif proc.returncode != 0 and "error" not in out:
            out["error"] = f"exit code {proc.returncode} (see agenda.log)"
        return out


def run_agenda(args: argparse.Namespace) -> int:
    a = Agenda(Path(args.out), Path(args.work), args.deadline_s, args.dry_run)
    dry = ["--dry-run"] if args.dry_run else []
    a.log(f"agenda: deadline {args.deadline_s:.0f} s, out {a.out}, work {a.work}" + (", DRY RUN on the CPU" if args.dry_run else ""))
    try:
        # 0. environment and data
        env = a.child(["env", "--result", str(a.work / "env.json"), *dry], 120, a.work / "env.json")
        a.phase("env", env)
        a.log(f"env: {env.get('gpu') or 'no GPU'}, torch {env.get('torch')}, data: {env.get('data_source') or env.get('data_error')}")

        # 1. modes: each in its own process; the eager one first, the others compared with it
        modes: dict[str, Any] = {}
        phase_start = time.monotonic()
        for name in (args.modes or list(MODES)):
            if not args.dry_run and (time.monotonic() - phase_start > MODES_BUDGET_S or a.left() < 180):
                modes[name] = {"skipped": "phase 1's time was used up (kept for the notebooks and training)"}
                continue
            res = a.work / f"mode-{name}.json"
            res.unlink(missing_ok=True)
            compiled = MODES[name].get("compile", False)
            modes[name] = a.child(["mode", name, "--result", str(res), *dry], 150 if compiled else 75, res)
            judge_modes(modes)
            a.phase("modes", modes)
            m = modes[name]
            a.log(f"mode {name}: " + (m.get("skipped") or m.get("error") or f"{m['images_per_s']:.0f} images/s, "
                                      f"passed={m.get('passed')} ({m.get('why', '')})"))
        picked = pick_mode(modes)
        a.record["picked_mode"] = picked
        a.phase("modes", modes)
        a.log(f"picked mode for training: {picked}")

        # 2. the reference loop, and each passing mode against it and against the GPU's peak
        ref = {"skipped": "--skip"} if "reference" in args.skip else \
            a.child(["reference", "--result", str(a.work / "reference.json"), *dry], 90, a.work / "reference.json")
        a.phase("reference", {**ref, "rows": throughput_rows(modes, ref, env)})

        # 3. the notebooks on this device, then as a T4 would run them
        nb: dict[str, Any] = {}
        for style in ("native", "t4"):
            if "notebooks" in args.skip:
                nb[style] = {"skipped": "--skip"}
            elif a.left() < 60:
                nb[style] = {"skipped": "too little time left"}
            else:
                res = a.work / f"notebooks-{style}.json"
                nb[style] = a.child(["notebooks", style, "--result", str(res), "--work", str(a.work), *dry], 150, res)
            a.phase("notebooks", nb)

        # 4. the scale-controls study with the time left
        a.phase("controls", {"skipped": "--skip"} if "controls" in args.skip else
                run_controls(a, picked, modes.get(picked or "", {}), env, args.dry_run))
    except Exception:  # noqa: BLE001 - whatever breaks, what was measured so far is kept and said
        a.record["error"] = traceback.format_exc()
        a.log(a.record["error"])
    a.record["done"] = True
    a.record["seconds"] = round(time.monotonic() - a.started, 1)
    a.save()
    a.log(f"agenda finished in {a.record['seconds']:.0f} s; $OUT holds: {' '.join(sorted(p.name for p in a.out.iterdir()))}")
    return 0


def judge_modes(modes: dict[str, Any]) -> None:
    """A mode passes if it ran, every loss was finite, and (for all but the eager ones) its first
    losses stay within LOSS_TOLERANCE of eager's at the same precision."""
    reference = modes.get("eager_bf16", {}).get("losses")
    for name, m in modes.items():
        if "images_per_s" not in m:
            m["passed"] = False
            continue
        if not m.get("finite"):
            m["passed"], m["why"] = False, "a loss was not finite"
        elif name.startswith("eager"):
            m["passed"], m["why"] = True, "eager: the reference"
        elif reference is None:
            m["passed"], m["why"] = False, "no eager bf16 losses to compare with"
        else:
            gap = max(abs(x - y) for row, ref_row in zip(m["losses"][:COMPARED_STEPS], reference[:COMPARED_STEPS])
                      for x, y in ((row[k], ref_row[k]) for k in ref_row))
            m["max_loss_gap"] = gap
            m["passed"] = gap <= LOSS_TOLERANCE
            m["why"] = f"first {COMPARED_STEPS} losses within {gap:.4f} of eager's (tolerance {LOSS_TOLERANCE})"


def pick_mode(modes: dict[str, Any]) -> str | None:
    """The fastest passing mode; fp16 only if nothing in bf16 passed (it needs a gradient scaler)."""
    passing = {n: m["images_per_s"] for n, m in modes.items() if m.get("passed")}
    preferred = {n: v for n, v in passing.items() if n != "eager_fp16"} or passing
    return max(preferred, key=lambda n: preferred[n]) if preferred else None


def throughput_rows(modes: dict[str, Any], ref: dict[str, Any], env: dict[str, Any]) -> list[dict[str, Any]]:
    ref_speed = ref.get("images_per_s")
    peak = env.get("bf16_peak_tflops")
    flops = env.get("train_flops_per_image")
    rows = []
    for name, m in modes.items():
        if not m.get("passed"):
            continue
        speed = m["images_per_s"]
        rows.append({"mode": name, "images_per_s": speed, "per_model_images_per_s": speed / m["n_models"],
                     "speedup_vs_reference": speed / ref_speed if ref_speed else None,
                     "fraction_of_bf16_peak": speed * flops / (peak * 1e12) if peak and flops else None,
                     "peak_gpu_memory_gb": m.get("peak_gpu_memory_gb")})
    return rows


def plan_controls(speed: float, seconds: float, train_images: int, test_images: int, done_seeds: set[int],
                  dry_run: bool, batch: int = 128) -> dict[str, Any]:
    """What phase 4 trains in ``seconds`` at ``speed`` images/s (all nine models together).

    One epoch of one model is its training images plus evaluation (counted at a third of a
    training step's cost per image). The whole recipe for one seed (three models) if it fits;
    else seeds 0-2 for the epochs that fit, at least 2.
    """
    per_model_epoch = (train_images // batch) * batch + test_images / 3
    # Three models instead of nine: assumed to go through as many images/s in all (a guess that
    # favours the full recipe only when it would fit with room to spare: the margin below).
    one_seed_s = RECIPE_EPOCHS_TOTAL * per_model_epoch * len(CONTROL_JOINS) / speed * FULL_RECIPE_MARGIN
    if not dry_run and one_seed_s <= seconds:
        seed = min(set(range(100)) - done_seeds)
        return {"recipe": "paper", "seeds": [seed], "epochs": RECIPE_EPOCHS, "warmup": RECIPE_WARMUP,
                "cooldown": RECIPE_COOLDOWN, "mix_off": RECIPE_MIX_OFF, "projected_s": one_seed_s,
                "note": f"the paper's recipe, seed {seed}: 300 + 10 epochs"}
    nine_epoch_s = per_model_epoch * len(CONTROL_JOINS) * len(CONTROL_SEEDS) / speed
    epochs = int(seconds // nine_epoch_s)
    if dry_run:
        epochs = 2
    if epochs < 2:
        return {"recipe": None, "epochs": epochs, "projected_epoch_s": nine_epoch_s,
                "note": f"not run: one epoch of the nine models takes about {nine_epoch_s:.0f} s and {seconds:.0f} s were left"}
    scale = epochs / RECIPE_EPOCHS
    return {"recipe": "shortened", "seeds": list(CONTROL_SEEDS), "epochs": epochs, "warmup": max(1, round(RECIPE_WARMUP * scale)),
            "cooldown": round(RECIPE_COOLDOWN * scale), "mix_off": round(RECIPE_MIX_OFF * scale), "projected_epoch_s": nine_epoch_s,
            "note": f"NOT the paper's recipe: {epochs} epochs with its schedule scaled by {epochs}/300 "
                    f"(the whole recipe for one seed would take about {one_seed_s / 60:.0f} min at this speed)"}




def done_seeds_in_results() -> set[int]:
    """Seeds of the three control arms already trained at the paper's recipe under results/gpu/."""
    seeds: set[int] = set()
    for path in (ROOT / "results" / "gpu").glob("*/controls-results.json"):
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if run.get("done") and run.get("config", {}).get("epochs") == RECIPE_EPOCHS and run.get("config", {}).get("n_train") is None:
            seeds.update(arm["seed"] for arm in run.get("arms", {}).values())
    return seeds


def run_controls(a: Agenda, picked: str | None, mode: dict[str, Any], env: dict[str, Any], dry_run: bool) -> dict[str, Any]:
    if picked is None:
        return {"skipped": "no training mode passed phase 1"}
    reserve = 45.0 if not dry_run else 20.0  # the report and the weights after training
    startup = 40.0 if not dry_run else 10.0  # imports, the decoded data from the cache, model building
    compile_s = mode.get("seconds", 0) * 0.6 if MODES[picked].get("compile") else 0.0  # compiled again by the run
    budget = a.left() - reserve - startup - compile_s
    train_images = 2000 if dry_run else int(env.get("n_train") or 50_000)
    test_images = 400 if dry_run else int(env.get("n_test") or 10_000)
    plan = plan_controls(mode["images_per_s"], budget, train_images, test_images, done_seeds_in_results(), dry_run,
                         batch=16 if dry_run else 128)
    plan["mode"] = picked
    a.log(f"controls: {plan['note']}")
    a.phase("controls", plan)
    if plan["recipe"] is None:
        return plan
    run_dir = a.work / "controls"
    flags = mode_flags(picked, dry_run)
    cmd = ["-m", "lape_lib.train", "--model", "vit_lite_7_4", "--joins", *CONTROL_JOINS, "--seeds", *map(str, plan["seeds"]),
           "--epochs", str(plan["epochs"]), "--warmup-epochs", str(plan["warmup"]), "--cooldown-epochs", str(plan["cooldown"]),
           "--mix-off-epoch", str(plan["mix_off"]), "--checkpoint-every", "0", "--save-weights", "--out", str(run_dir), *flags]
    if dry_run:
        cmd += ["--dataset", "toy", "--no-augment", "--n-train", "2000", "--n-test", "400", "--batch-size", "16", "--device", "cpu",
                "--override", "depth=1", "dim=32", "num_heads=2"]
    limit = a.left() - reserve
    cmd += ["--time-limit-minutes", f"{max(limit - 5, 1) / 60:.3f}"]  # ends on a results.json before the kill
    plan["command"] = "python " + " ".join(cmd)
    mirrored = {"mtime": 0.0}
    source = run_dir / "results.json"

    def mirror() -> None:
        try:
            mtime = source.stat().st_mtime
        except OSError:
            return
        if mtime != mirrored["mtime"]:
            mirrored["mtime"] = mtime
            try:
                write_json(a.out / "controls-results.json", json.loads(source.read_text()))
            except ValueError:
                mirrored["mtime"] = 0.0  # caught mid-write: next time

    plan["run"] = a.child(cmd, limit, env={"LAPE_NO_PROGRESS": "1"}, poll=mirror)
    a.phase("controls", plan)
    if (a.out / "controls-results.json").exists():
        plan["report"] = a.child(["-m", "lape_lib.report", str(a.out / "controls-results.json"), "--allow-unfinished",
                                  "--out", str(a.out / "controls-summary.json")], max(a.left() - 5, 5))
    for weights in sorted(run_dir.glob(f"*-s{plan['seeds'][0]}.safetensors")):
        target = a.out / weights.name.replace("@", "-std")  # '@' does not come back through $OUT
        write_bytes(target, weights.read_bytes())
        plan.setdefault("weights", []).append(target.name)
    return plan


def mode_settings(name: str, dry_run: bool) -> dict[str, Any]:
    """The TrainConfig fields of a mode (a dry run on the CPU trains fp32 where the GPU takes bf16)."""
    spec = {k: v for k, v in MODES[name].items() if k != "cuda"}
    if dry_run and spec["precision"] == "bf16":
        spec["precision"] = "fp32"
    return spec


def mode_flags(name: str, dry_run: bool) -> list[str]:
    m = mode_settings(name, dry_run)
    flags = ["--precision", m["precision"]]
    if m.get("compile"):
        flags.append("--compile")
    if m.get("compile_mode"):
        flags += ["--compile-mode", m["compile_mode"]]
    if m.get("cuda_graph"):
        flags.append("--cuda-graph")
    if m.get("stack_seeds"):
        flags.append("--stack-seeds")
    return flags


# ---------------------------------------------------------------- the children: one phase each


def child_env(result: Path, dry_run: bool) -> None:
    import torch
    import torchvision

    from lape_lib import create_model
    from lape_lib.data import load_cifar

    info: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
                            "cuda": torch.version.cuda, "gpu": None, "dry_run": dry_run}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_gb=props.total_memory / 1e9,
                    multiprocessors=props.multi_processor_count)
        info["bf16_peak_tflops"] = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in props.name), None)
    write_json(result, info)
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model("vit_lite_7_4", join="lape")
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 32, 32))
    info["forward_flops_per_image"] = counter.get_total_flops()
    info["train_flops_per_image"] = 3 * counter.get_total_flops()  # forward + backward (twice the forward)
    write_json(result, info)
    t0 = time.perf_counter()
    try:
        data = load_cifar("cifar10")
        info.update(data_source=data.source, n_train=len(data.train_y), n_test=len(data.test_y),
                    data_seconds=round(time.perf_counter() - t0, 1))
    except Exception as err:  # noqa: BLE001 - said in the record; phase 4 then has no CIFAR
        info["data_error"] = f"{type(err).__name__}: {err}"
    write_json(result, info)


def mode_config(name: str, dry_run: bool) -> Any:
    from lape_lib.augment import AugmentConfig
    from lape_lib.config import TrainConfig

    spec = mode_settings(name, dry_run)
    no_dropout = {"attn_drop": 0.0, "drop": 0.0, "drop_path": 0.0}  # so every mode computes the same losses
    if dry_run:
        return TrainConfig(model="vit_lite_7_4", model_overrides={"depth": 1, "dim": 32, "num_heads": 2, **no_dropout},
                           joins=CONTROL_JOINS, seeds=CONTROL_SEEDS, batch_size=16, device="cpu", progress=False, **spec)
    return TrainConfig(model="vit_lite_7_4", model_overrides=no_dropout, joins=CONTROL_JOINS, seeds=CONTROL_SEEDS,
                       batch_size=128, augment=AugmentConfig(), progress=False, **spec)


def child_mode(name: str, result: Path, dry_run: bool) -> None:
    import torch

    from lape_lib.speed import time_step

    info: dict[str, Any] = {"mode": name, **{k: v for k, v in MODES[name].items()}}
    if MODES[name].get("cuda") and not torch.cuda.is_available():
        info["skipped"] = "needs a CUDA GPU"
        write_json(result, info)
        return
    write_json(result, {**info, "error": "started, not finished (crashed or killed)"})
    cfg = mode_config(name, dry_run)
    steps = 3 if dry_run else 30
    warmup = max(COMPARED_STEPS, 3)
    t0 = time.perf_counter()
    try:
        speed = time_step(cfg, steps=steps, warmup=warmup)
    except Exception as err:  # noqa: BLE001 - the error is this mode's result
        info.update(error=f"{type(err).__name__}: {str(err)[:2000]}", traceback=traceback.format_exc()[-4000:])
        write_json(result, info)
        return
    losses = speed.pop("losses")
    info.update(speed, losses=losses, seconds_with_setup=round(time.perf_counter() - t0, 1),
                finite=all(torch.isfinite(torch.tensor(list(row.values()))).all().item() for row in losses))
    write_json(result, info)


def child_reference(result: Path, dry_run: bool) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from throughput import reference_loop  # type: ignore[import-not-found]

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workers = 2 if dry_run else min(16, os.cpu_count() or 1)
    steps, batch = (3, 16) if dry_run else (40, 128)
    write_json(result, {"error": "started, not finished"})
    speed = reference_loop(steps, batch, workers, device)
    write_json(result, {"images_per_s": speed, "steps": steps, "batch_size": batch, "workers": workers, "device": str(device),
                        "what": "fp32, eager, one ViT-Lite-7/4, PIL augmentation in DataLoader workers (benchmarks/throughput.py)"})


class _Display:
    """IPython.display's names, for a device without IPython: the notebooks' tables print as text."""

    class Markdown(str):
        pass

    class SVG(str):
        def __new__(cls, data: Any = None, filename: str | None = None, **_: Any) -> Any:
            return str.__new__(cls, data if data is not None else Path(filename or "").read_text())

    @staticmethod
    def display(*objs: Any, **_: Any) -> None:
        for o in objs:
            print(o)


def child_notebooks(style: str, result: Path, work: Path) -> None:
    """Execute every notebook's code cells in this process, in smoke mode, as papermill would
    with ``output_dir`` injected; ``style="t4"``: as on a GPU without native bf16 (fp16 + scaler)."""
    import importlib.util
    import types

    os.environ["LAPE_SMOKE"] = "1"
    os.environ["LAPE_NO_PROGRESS"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import lape_lib.train as trainer

    if style == "t4":
        trainer.native_bf16 = lambda device: False  # type: ignore[assignment]  # what resolve_precision asks
    info: dict[str, Any] = {"style": style, "notebooks": {}}
    if importlib.util.find_spec("IPython") is None:
        stub = types.ModuleType("IPython")
        display = types.ModuleType("IPython.display")
        display.display, display.Markdown, display.SVG = _Display.display, _Display.Markdown, _Display.SVG  # type: ignore[attr-defined]
        stub.display = display  # type: ignore[attr-defined]
        sys.modules["IPython"], sys.modules["IPython.display"] = stub, display
        info["ipython"] = "not installed: IPython.display stubbed (tables printed as text)"
    out_dir = work / f"notebooks-{style}"
    cwd = os.getcwd()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):  # their names give the workbook's order
        name = path.name
        nb = json.loads(path.read_text())
        row: dict[str, Any] = {"ok": False, "cells": 0}
        info["notebooks"][name] = row
        write_json(result, info)
        namespace: dict[str, Any] = {"__name__": "__main__", "display": _Display.display}
        t0 = time.perf_counter()
        os.chdir(ROOT / "notebooks")  # a notebook's relative paths are its folder's
        try:
            for i, cell in enumerate(nb["cells"]):
                if cell["cell_type"] != "code":
                    continue
                source = "".join(cell["source"])
                code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
                try:
                    exec(compile(code, f"{name}[{i}]", "exec"), namespace)
                except Exception as err:  # noqa: BLE001 - this cell's failure is the notebook's result
                    row.update(failed_cell=i, cell_start=source.strip().splitlines()[0][:120] if source.strip() else "",
                               error=f"{type(err).__name__}: {str(err)[:1500]}", traceback=traceback.format_exc()[-3000:])
                    break
                row["cells"] += 1
                if "parameters" in cell.get("metadata", {}).get("tags", []):
                    namespace["output_dir"] = str(out_dir)  # as papermill's injected parameters
            else:
                row["ok"] = True
        finally:
            os.chdir(cwd)
            plt.close("all")
        row["seconds"] = round(time.perf_counter() - t0, 1)
        write_json(result, info)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what")
    for name in ("env", "reference"):
        c = sub.add_parser(name)
        c.add_argument("--result", required=True)
        c.add_argument("--dry-run", action="store_true")
    c = sub.add_parser("mode")
    c.add_argument("name", choices=list(MODES))
    c.add_argument("--result", required=True)
    c.add_argument("--dry-run", action="store_true")
    c = sub.add_parser("notebooks")
    c.add_argument("style", choices=("native", "t4"))
    c.add_argument("--result", required=True)
    c.add_argument("--work", required=True)
    c.add_argument("--dry-run", action="store_true")
    p.add_argument("--out", default=os.environ.get("OUT", "runs/agenda-out"), help="the files to bring back ($OUT)")
    p.add_argument("--work", default="runs/agenda", help="everything else (runs, notebook outputs)")
    p.add_argument("--deadline-s", type=float, default=float(os.environ.get("AGENDA_DEADLINE_S", 500)))
    p.add_argument("--modes", nargs="*", choices=list(MODES), help="default: all, in the order listed")
    p.add_argument("--skip", nargs="*", default=[], choices=SKIPPABLE, help="phases to leave out, e.g. notebooks")
    p.add_argument("--dry-run", action="store_true", default=os.environ.get("AGENDA_DRY_RUN", "") not in ("", "0"))
    args = p.parse_args(argv)
    if args.what is None:
        return run_agenda(args)
    sys.path.insert(0, str(ROOT))  # lape_lib from this checkout (the device has no pip install)
    if args.what == "env":
        child_env(Path(args.result), args.dry_run)
    elif args.what == "mode":
        child_mode(args.name, Path(args.result), args.dry_run)
    elif args.what == "reference":
        child_reference(Path(args.result), args.dry_run)
    else:
        child_notebooks(args.style, Path(args.result), Path(args.work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
