"""Smoke mode without any CIFAR copy (a fresh clone, no ../shared, no network): a labelled stand-in,
never a download; outside smoke mode the loader still refuses or downloads as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lape_lib.data as data_module
from lape_lib.data import DataError, download_root, load_cifar
from lape_lib.synthetic import make_standin


@pytest.fixture(autouse=True)
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("LAPE_DATA", str(empty))  # the only root searched: nothing there
    monkeypatch.setenv("LAPE_CACHE", str(tmp_path / "cache"))
    return empty


@pytest.mark.parametrize(("name", "classes"), [("cifar10", 10), ("cifar100", 100)])
def test_smoke_mode_reads_a_labelled_stand_in_instead_of_downloading(name: str, classes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAPE_SMOKE", "1")
    monkeypatch.setattr(data_module, "_download", lambda *a, **k: pytest.fail("smoke mode tried to download"))
    data = load_cifar(name, download=True, n_train=200, n_test=100)
    assert data.source.startswith(f"stand-in:{name}") and f"NOT {name}" in data.source
    assert data.num_classes == classes and (data.n_train, data.n_test) == (200, 100)
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape[1:] == (3, 32, 32)
    assert torch.bincount(data.train_y, minlength=classes).max() - torch.bincount(data.train_y, minlength=classes).min() <= 1


def test_the_stand_in_is_learnable_and_repeatable() -> None:
    a, b = make_standin("cifar10"), make_standin("cifar10")
    assert torch.equal(a.train_x, b.train_x)
    # Class means differ: a nearest-class-mean rule beats chance by far on the test split.
    means = torch.stack([a.train_x[a.train_y == c].float().mean(0) for c in range(10)])
    guess = torch.cdist(a.test_x.float().flatten(1), means.flatten(1)).argmin(1)
    assert (guess == a.test_y).float().mean() > 0.5


def test_outside_smoke_mode_a_missing_copy_is_still_an_error(monkeypatch: pytest.MonkeyPatch, nowhere: Path) -> None:
    monkeypatch.setenv("LAPE_SMOKE", "0")
    with pytest.raises(DataError, match=f"no cifar10 found in \\['{nowhere}'\\].*or set LAPE_DATA to one"):
        load_cifar("cifar10")  # no root given: LAPE_DATA is where the loader would look


def test_a_download_goes_to_the_checkouts_data_folder_not_the_notebooks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LAPE_DATA")
    monkeypatch.chdir(tmp_path)  # as a kernel in notebooks/ would be: not the repository's root
    assert download_root() == Path(data_module.__file__).resolve().parents[1] / "data"
    monkeypatch.setenv("LAPE_DATA", str(tmp_path / "mine"))
    assert download_root() == tmp_path / "mine"
