"""Run the whole workbook with papermill: ``python -m lape_lib.workbook --out runs/workbook``.

Without a GPU the notebooks run with the CPU presets below (minutes in all on 2 cores, on the
offline CIFAR-10 copy and the toy set); with one, the training notebooks' ``preset="auto"`` picks
``class`` (a class period), never the paper's recipe unless ``--preset paper`` asks for it.
``-p NAME VALUE`` overrides a parameter in every notebook that has it (VALUE is read as JSON
when it parses, else as a string), e.g. ``-p epochs 5``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__
from .files import git_commit, write_json
from .presets import PRESETS, resolve_preset
from .train import NO_PROGRESS_ENV, RESUMED_FINISHED

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"

RECORD = "workbook.json"  # what a run of the workbook did: commit, device, each notebook's parameters and seconds

NOTEBOOKS = (
    "00_setup.ipynb",
    "01_affine_argument.ipynb",
    "02_train_vitlite_cifar.ipynb",
    "03_per_layer_pe.ipynb",
    "04_pe_types_and_joins.ipynb",
)

# Parameters a 2-core CPU finishes in minutes: the training notebooks' own "cpu" preset
# (lape_lib.presets), and the per-layer PE notebooks' toy pair instead of notebook 02's too-short run.
CPU_PRESETS: dict[str, dict[str, Any]] = {
    "00_setup.ipynb": {},
    "01_affine_argument.ipynb": {"use_notebook_02": False},
    "02_train_vitlite_cifar.ipynb": {"preset": "cpu"},
    "03_per_layer_pe.ipynb": {"use_notebook_02": False},  # 02's CPU run is too short for its PEs to move
    "04_pe_types_and_joins.ipynb": {"preset": "cpu"},
}


# What each notebook's CPU preset can and cannot show: the banner of an executed notebook says it.
PRESET_NOTES: dict[str, str] = {
    "00_setup.ipynb": "It times this machine's training step and shows where the images are read from.",
    "01_affine_argument.ipynb": "The algebra holds exactly at any size; its trained pair is a short toy-set run (section 3 "
                                "measures whether its layers' PE maps moved apart; longer training is not tested here).",
    "02_train_vitlite_cifar.ipynb": "A 2-layer ViT-Lite on 2,000 CIFAR-10 images for 6 epochs, one seed: what the joins and "
                                    "controls do early in training, not the paper's 300-epoch result.",
    "03_per_layer_pe.ipynb": "Its trained pair is a short toy-set run: section 1 measures whether its layers' PE maps "
                             "moved apart (the paper's layer-adaptive pattern); longer training is not tested here.",
    "04_pe_types_and_joins.ipynb": "The toy position task, one seed per cell: which joins let a small model use "
                                   "position within 6 epochs (results/toy_controls/ has 5 seeds of the controls).",
}


def add_banner(path: Path, name: str, params: dict[str, Any], preset: str) -> None:
    """Put a note at the top of an executed notebook: how it was run and what that run can show."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    shown = {k: v for k, v in params.items() if k != "output_dir"}
    resolved = resolve_preset(preset)
    notes = {"cpu": PRESET_NOTES[name], "paper": "The paper's recipe.",
             "class": "Sized for a class period on a GPU (notebooks 02 and 04 print their measured estimate before training)."}
    if preset == "auto" and resolved == "cpu":  # --gpu-defaults on a machine without one: the notebook's own defaults
        notes["cpu"] = "The notebook's own defaults on a machine without a GPU (the training notebooks pick their cpu preset)."
    which = f" (the {resolved.upper()} preset on this machine)" if resolved != preset else ""
    banner = (f"> **Executed by `python -m lape_lib.workbook`** with the {preset.upper()} preset{which}"
              f"{': `' + json.dumps(shown) + '`' if shown else ''}. {notes[resolved]}")
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(banner))
    nbformat.write(nb, path)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def notebook_parameters(path: Path) -> set[str]:
    """The names assigned in a notebook's ``parameters`` cell."""
    import ast

    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
    raise ValueError(f"{path.name} has no cell tagged 'parameters'")


def run(out: Path, overrides: dict[str, Any], only: list[str] | None = None, use_gpu_defaults: bool | None = None,
        kernel: str = "python3", preset: str | None = None, command: str | None = None) -> list[Path]:
    """Execute the notebooks in order into ``out``; returns the executed notebooks' paths. ``out/workbook.json``
    records the run (``command`` as given), rewritten after every notebook."""
    import papermill as pm
    import torch

    gpu = torch.cuda.is_available() if use_gpu_defaults is None else use_gpu_defaults
    out.mkdir(parents=True, exist_ok=True)
    # A progress bar that papermill saves stays frozen at its first frame: the kernels run without.
    os.environ[NO_PROGRESS_ENV] = "1"
    done: list[Path] = []
    started = time.perf_counter()
    record: dict[str, Any] = {
        "command": command, "commit": git_commit(NOTEBOOK_DIR.parent, mark_dirty=True),
        "lape_lib": __version__, "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "date": time.strftime("%Y-%m-%d"), "seconds": 0.0, "notebooks": []}
    names = [n for n in NOTEBOOKS if not only or any(n.startswith(o) for o in only)]
    if not names:
        raise SystemExit(f"error: no notebook matches {only}; the notebooks are {list(NOTEBOOKS)}")
    accepted_by = {n: notebook_parameters(NOTEBOOK_DIR / n) for n in names}
    unknown = set(overrides) - set().union(*accepted_by.values())
    if unknown:  # fail before the first notebook runs, not after
        raise SystemExit(f"error: none of the notebooks run here ({', '.join(names)}) has parameter(s) {sorted(unknown)}")
    for name in names:
        path = NOTEBOOK_DIR / name
        accepted = accepted_by[name]
        params = {} if gpu else dict(CPU_PRESETS[name])
        if "interactive" in accepted:  # a saved notebook holds a widget as text; save static figures instead
            params["interactive"] = False
        if preset is not None and "preset" in accepted:
            params["preset"] = preset
        params.update({k: v for k, v in overrides.items() if k in accepted})
        params["output_dir"] = str(out)
        t0 = time.perf_counter()
        print(f"[workbook] {name} with {params}", flush=True)
        # The notebook's printed lines (its preset, the time estimate before training, each epoch)
        # reach this terminal as they come, not only the saved notebook.
        pm.execute_notebook(str(path), str(out / name), parameters=params, cwd=str(out), kernel_name=kernel,
                            progress_bar=False, stdout_file=sys.stdout, stderr_file=sys.stderr)
        add_banner(out / name, name, params, params.get("preset", "auto" if gpu else "cpu"))
        seconds = time.perf_counter() - t0
        print(f"[workbook] {name} done in {seconds:.0f} s", flush=True)
        done.append(out / name)
        record["notebooks"].append({"name": name, "parameters": params, "seconds": round(seconds, 1),
                                    "resumed_finished_training": RESUMED_FINISHED in printed_text(out / name)})
        record["seconds"] = round(time.perf_counter() - started, 1)
        write_json(out / RECORD, record)  # after every notebook: a killed run still says how far it got
    return done


def printed_text(path: Path) -> str:
    """Everything an executed notebook's code cells printed (stream outputs)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lape_lib.workbook", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/workbook", help="folder for the executed notebooks and figures")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    p.add_argument("--only", nargs="+", help="notebook prefixes to run, e.g. 00 03")
    p.add_argument("--gpu-defaults", action="store_true", help="use the notebooks' own defaults (preset auto) even without a GPU")
    p.add_argument("--preset", choices=PRESETS,
                   help="the training notebooks' preset (default: cpu without a GPU, auto with one); paper is the 300-epoch recipe")
    p.add_argument("--kernel", default="python3")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    t0 = time.perf_counter()
    gpu_defaults = True if args.gpu_defaults or args.preset not in (None, "cpu") else None
    command = "python -m lape_lib.workbook" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    done = run(out, {k: _value(v) for k, v in args.parameter}, args.only, gpu_defaults, args.kernel, args.preset, command)
    figures = sorted(out.glob("*.png"))
    print(f"\nexecuted {len(done)} notebooks in {time.perf_counter() - t0:.0f} s into {out}")
    for path in done:
        print(f"  {path}")
    print(f"figures ({len(figures)}):")
    for path in figures:
        print(f"  {path}")


if __name__ == "__main__":
    main()
