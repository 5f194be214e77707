"""Presets: what "Run all" trains when no parameter is given, and the time estimate before it."""

from __future__ import annotations

import ast
from types import SimpleNamespace

import nbformat
import pytest

from lape_lib.augment import AugmentConfig
from lape_lib.presets import PRESETS, SETTINGS, TRAINING_NOTEBOOKS, announce, apply_preset, resolve_preset
from lape_lib.config import TrainConfig
from lape_lib.speed import estimate_minutes
from lape_lib.workbook import NOTEBOOK_DIR


def test_auto_is_cpu_without_a_gpu_and_class_with_one_never_paper() -> None:
    assert resolve_preset("auto", gpu=False) == "cpu" and resolve_preset("auto", gpu=True) == "class"
    assert resolve_preset("paper", gpu=False) == "paper"
    with pytest.raises(ValueError, match=r"unknown preset 'fast'; choose one of \('auto', 'cpu', 'class', 'paper'\)"):
        resolve_preset("fast")


@pytest.mark.parametrize("notebook", TRAINING_NOTEBOOKS)
def test_every_preset_setting_is_left_to_the_preset_in_the_notebook(notebook: str) -> None:
    """The parameters cell leaves each preset-controlled value at None (and offers preset="auto")."""
    nb = nbformat.read(NOTEBOOK_DIR / notebook, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    values = {t.id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
              for t in node.targets if isinstance(t, ast.Name)}
    assert values["preset"] == "auto"
    for preset in ("cpu", "class", "paper"):
        for key in SETTINGS[notebook][preset]:
            assert values[key] is None, f"{notebook}: {key} is {values[key]!r} in the parameters cell; None lets the preset set it"


def test_apply_preset_fills_nones_and_keeps_what_the_user_set(capsys: pytest.CaptureFixture) -> None:
    p = SimpleNamespace(preset="auto", model_overrides=None, n_train=None, n_test=None, epochs=3, warmup_epochs=None,
                        cooldown_epochs=None, batch_size=None, lr=None, augment=None)
    apply_preset(p, "02_train_vitlite_cifar.ipynb", gpu=False)
    assert p.epochs == 3 and p.n_train == 2000 and p.model_overrides == {"depth": 2} and p.augment is False
    out = capsys.readouterr().out
    assert "preset cpu (no GPU found): model_overrides={'depth': 2}, n_train=2000" in out and "set by you: epochs" in out
    q = SimpleNamespace(**{**vars(p), "preset": "paper", "epochs": None, "n_train": None})
    apply_preset(q, "02_train_vitlite_cifar.ipynb")
    assert q.epochs == 300 and q.n_train is None  # the paper's recipe: all 50,000 images


def test_the_estimate_times_this_device_and_warns_past_a_session(capsys: pytest.CaptureFixture) -> None:
    cfg = TrainConfig(model="vit_lite_7_4", model_overrides={"depth": 1, "dim": 32, "num_heads": 2}, dataset="toy",
                      joins=("add", "lape"), n_train=64, epochs=2, warmup_epochs=1, cooldown_epochs=0, batch_size=16,
                      augment=AugmentConfig.off(), device="cpu", progress=False)
    est = estimate_minutes(cfg, steps=2)
    assert est["models"] == 2 and est["epochs"] == 2 and est["images_per_s"] > 0
    assert est["minutes"] == pytest.approx(64 * 2 * 2 / est["images_per_s"] / 60)
    announce(est, None)
    assert "estimated training time: about" in capsys.readouterr().out
    announce({**est, "minutes": 478 * 60}, None)
    warned = capsys.readouterr().out
    assert "WARNING: that is longer than a 90-minute session (a class period" in warned and "time_limit_minutes" in warned and "Google Drive" in warned
    announce({**est, "minutes": 478 * 60}, 80.0)
    assert "WARNING" not in capsys.readouterr().out  # a time limit is already set


def test_presets_cover_the_names() -> None:
    assert PRESETS == ("auto", "cpu", "class", "paper")
    assert set(SETTINGS) == {*TRAINING_NOTEBOOKS, "zoo"}
    assert all(set(SETTINGS[nb]) == {"cpu", "class", "paper", "smoke"} for nb in TRAINING_NOTEBOOKS)
    assert set(SETTINGS["zoo"]) == {"cpu", "smoke"}
