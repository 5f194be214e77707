"""The workbook's notebooks: structure, clean commits, papermill execution, parameter errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from lape_lib.workbook import CPU_PRESETS, NOTEBOOK_DIR, NOTEBOOKS, notebook_parameters, printed_text

PATHS = [NOTEBOOK_DIR / n for n in NOTEBOOKS]
CELL_TIMEOUT_S = 900  # a hung cell fails the test instead of eating CI's 90 min (nbval: pyproject's addopts)
ROOT = NOTEBOOK_DIR.parent


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def test_every_notebook_is_listed() -> None:
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)
    assert set(CPU_PRESETS) == set(NOTEBOOKS)


@pytest.mark.parametrize("path", PATHS, ids=NOTEBOOKS)
def test_structure(path: Path) -> None:
    nb = read(path)
    nbformat.validate(nb)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters' (notebook cleaners strip tags: re-add it)"
    i = tagged[0]
    assert "output_dir" in notebook_parameters(path)
    # The cell right after the parameters validates them (and applies smoke mode).
    assert "check(globals()" in nb.cells[i + 1].source
    # The first cells: a title with an Open-in-Colab badge, then the install-if-missing cell.
    assert nb.cells[0].cell_type == "markdown" and "colab-badge.svg" in nb.cells[0].source
    assert 'find_spec("lape_lib") is None' in nb.cells[1].source
    assert "Exercises" in nb.cells[-1].source


@pytest.mark.parametrize("path", PATHS, ids=NOTEBOOKS)
def test_committed_without_outputs(path: Path) -> None:
    for cell in read(path).cells:
        if cell.cell_type != "code":
            continue
        if "NBVAL_CHECK_OUTPUT" not in cell.source:
            assert not cell.outputs and cell.execution_count is None, f"cell {cell.id} has outputs: clear them before committing"
        else:  # nbval-checked cells keep their small, textual reference output on purpose
            assert cell.outputs, f"cell {cell.id} is marked NBVAL_CHECK_OUTPUT but has no reference output"
            assert all(o.output_type == "stream" for o in cell.outputs)
            assert len(json.dumps(cell.outputs)) < 4000


def test_no_tqdm_notebook_anywhere() -> None:
    sources = [p.read_text() for p in list((ROOT / "lape_lib").glob("*.py")) + PATHS]
    assert not any(re.search(r"tqdm\.notebook|from tqdm import tqdm\b", s) for s in sources)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_executes(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each notebook runs top to bottom under papermill at smoke size (the CPU presets, shrunk)."""
    import papermill as pm

    monkeypatch.setenv("LAPE_SMOKE", "1")
    params = dict(CPU_PRESETS[name], output_dir=str(tmp_path))
    pm.execute_notebook(str(NOTEBOOK_DIR / name), str(tmp_path / name), parameters=params, cwd=str(tmp_path), progress_bar=False, execution_timeout=CELL_TIMEOUT_S)
    executed = read(tmp_path / name)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert list((tmp_path / "smoke").glob("*.png")), "every notebook writes at least one figure (smoke runs: into smoke/)"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["02_train_vitlite_cifar.ipynb", "04_pe_types_and_joins.ipynb"])
def test_time_limit_ends_a_training_notebook_mid_run_and_the_next_run_resumes(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Colab path: a call cut short still shows its (mid-run) results; running again continues."""
    import papermill as pm

    monkeypatch.setenv("LAPE_SMOKE", "1")
    params = dict(CPU_PRESETS[name], output_dir=str(tmp_path))
    for minutes, expected in ((1e-6, "mid-run"), (None, None)):
        out = tmp_path / f"{minutes}-{name}"
        pm.execute_notebook(str(NOTEBOOK_DIR / name), str(out), parameters={**params, "time_limit_minutes": minutes},
                            cwd=str(tmp_path), progress_bar=False, execution_timeout=CELL_TIMEOUT_S)
        text = printed_text(out)
        assert ("this run has not reached its last epoch" in text) == (expected == "mid-run")
    results = json.loads(next((tmp_path / "smoke").glob("*/results.json")).read_text())
    assert results["done"] and all(len(a["history"]) == results["config"]["epochs"] + results["config"]["cooldown_epochs"]
                                   for a in results["arms"].values())


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,params,needle",
    [
        ("02_train_vitlite_cifar.ipynb", {"epochs": "ten"}, "parameter epochs='ten' has type str; expected int or None"),
        ("04_pe_types_and_joins.ipynb", {"preset": "huge"}, "parameter preset='huge': 'huge' is not valid; choose from ['auto', 'cpu', 'class', 'paper']"),
        ("02_train_vitlite_cifar.ipynb", {"model": "vit_lite_9_4"}, "'vit_lite_9_4' is not valid"),
        ("04_pe_types_and_joins.ipynb", {"joins": ["add", "concat"]}, "unknown join 'concat' in 'concat'"),
        ("02_train_vitlite_cifar.ipynb", {"epoch": 5}, "epoch=5 is not a parameter of this notebook; did you mean 'epochs'?"),
        ("02_train_vitlite_cifar.ipynb", {"seeds": [1.5]}, "parameter seeds=[1.5]: 1.5 is not an integer"),
        ("04_pe_types_and_joins.ipynb", {"time_limit_minutes": -5}, "time_limit_minutes=-5.0 must be a positive number or None"),
        ("00_setup.ipynb", {"dataset": "mnist"}, "'mnist' is not valid; choose from ['cifar10', 'cifar100']"),
    ],
)
def test_wrong_parameter_fails_early(name: str, params: dict, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import papermill as pm

    monkeypatch.delenv("LAPE_SMOKE", raising=False)
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(NOTEBOOK_DIR / name), str(tmp_path / name), parameters={**params, "output_dir": str(tmp_path)},
                            cwd=str(tmp_path), progress_bar=False, execution_timeout=CELL_TIMEOUT_S)
    assert needle in str(err.value)
    assert err.value.exec_count <= 4, "the bad parameter must stop the notebook in its first cells"


def test_workbook_runner_rejects_unknown_parameters_before_running(tmp_path: Path) -> None:
    from lape_lib.workbook import run

    with pytest.raises(SystemExit, match=r"none of the notebooks run here \(.*02_train_vitlite_cifar.ipynb.*\) has parameter\(s\) \['epoch'\]"):
        run(tmp_path, {"epoch": 3})
    with pytest.raises(SystemExit, match="no notebook matches"):
        run(tmp_path, {}, only=["99"])
    assert not list(tmp_path.glob("*.ipynb"))


@pytest.mark.slow
def test_workbook_runner_shows_what_the_notebooks_print(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    """A long run's estimate must reach the terminal before training, not only the saved notebook."""
    from lape_lib.train import NO_PROGRESS_ENV
    from lape_lib.workbook import run

    monkeypatch.setenv(NO_PROGRESS_ENV, "1")  # run() sets it; this restores the old state afterwards
    run(tmp_path, {}, only=["00"], command="python -m lape_lib.workbook --only 00")
    out = capsys.readouterr().out
    assert "[workbook] 00_setup.ipynb with" in out
    assert "parameters" in out and "images/s per model" in out  # printed by the notebook's cells
    record = json.loads((tmp_path / "workbook.json").read_text())  # what README's main-job time is read from
    assert record["command"] == "python -m lape_lib.workbook --only 00" and record["device"].startswith("cpu")
    (entry,) = record["notebooks"]
    assert entry["name"] == "00_setup.ipynb" and 0 < entry["seconds"] <= record["seconds"]
    assert entry["resumed_finished_training"] is False


def test_executed_notebooks_get_a_banner_saying_what_the_preset_can_show(tmp_path: Path) -> None:
    import shutil

    from lape_lib.workbook import PRESET_NOTES, add_banner

    assert set(PRESET_NOTES) == set(NOTEBOOKS)
    name = "02_train_vitlite_cifar.ipynb"
    shutil.copy(NOTEBOOK_DIR / name, tmp_path / name)
    add_banner(tmp_path / name, name, {"epochs": 6, "output_dir": "x"}, "cpu")
    first = read(tmp_path / name).cells[0]
    assert first.cell_type == "markdown" and 'with the CPU preset: `{"epochs": 6}`' in first.source
    assert "not the paper's 300-epoch result" in first.source
    for gpu, expected in ((False, "with the AUTO preset (the CPU preset on this machine). The notebook's own defaults on a "
                                  "machine without a GPU"),
                          (True, "with the AUTO preset (the CLASS preset on this machine). Sized for a class period on a GPU")):
        shutil.copy(NOTEBOOK_DIR / name, tmp_path / name)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("torch.cuda.is_available", lambda: gpu)
            add_banner(tmp_path / name, name, {"output_dir": "x"}, "auto")
        assert expected in read(tmp_path / name).cells[0].source


@pytest.mark.slow
def test_per_layer_notebook_with_a_fixed_sinusoid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exercise 2 of notebook 03 (pe="sin2d"): a fixed PE cannot move, and the notebook says so
    instead of calling it a random code."""
    import papermill as pm

    monkeypatch.setenv("LAPE_SMOKE", "1")
    name = "03_per_layer_pe.ipynb"
    pm.execute_notebook(str(NOTEBOOK_DIR / name), str(tmp_path / name), parameters={"pe": "sin2d", "output_dir": str(tmp_path)},
                        cwd=str(tmp_path), progress_bar=False, execution_timeout=CELL_TIMEOUT_S)
    text = printed_text(tmp_path / name)
    assert "Both PEs are fixed (a sinusoid cannot move)" in text
    assert "random code" not in text
