"""The workbook's figures (lape_lib.plotting): locality, the similarity explorer, learning curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lape_lib import create_model  # noqa: E402


def test_locality_and_distance_bins() -> None:
    from lape_lib.plotting import locality, similarity_by_distance

    torch.manual_seed(0)
    local = locality(create_model("vit_lite_7_4", pe="sin2d", join="lape", depth=2))
    random = locality(create_model("vit_lite_7_4", pe="learnable", join="lape", depth=2))
    assert local.shape == (2,) and (local > 0.2).all()  # a 2-D sinusoid: neighbours alike, far patches not
    assert (abs(random) < 0.05).all()  # a random P at init: no locality
    distances, table = similarity_by_distance(create_model("vit_lite_7_4", pe="sin2d", join="add", depth=1))
    assert 10 not in distances.tolist() and distances[0] == 1  # the 8x8 grid's corner-to-corner bin (2 pairs) is left out
    assert table.shape == (1, len(distances))


def test_the_similarity_explorer_draws_one_map_per_model_without_widgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Notebook 03's explorer, static: one panel per model for layer 1 and the patch asked for, each
    the cosine similarity of that patch's PE to every patch's (so the patch's own cell is 1)."""
    from lape_lib.plotting import explore_similarity

    shown: list = []
    monkeypatch.setattr(plt, "show", lambda: shown.append(plt.gcf()))
    torch.manual_seed(0)
    models = {j: create_model("vit_lite_7_4", join=j, depth=2).eval() for j in ("add", "lape")}
    explore_similarity(models, patch=9, interactive=False)
    (fig,) = shown
    axes = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in axes] == ["add: layer 1, patch 9", "lape: layer 1, patch 9"]
    grid = axes[0].images[0].get_array()
    assert grid.shape == (8, 8) and grid[1, 1] == pytest.approx(1.0, abs=1e-5)  # patch 9 sits at row 1, column 1
    plt.close("all")


def test_the_explorer_shows_sliders_only_where_a_person_can_move_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sliders with ``interactive`` in a kernel a person drives; a static figure in a headless run
    (the suite sets LAPE_NO_WIDGETS for papermill and nbval; the browser test unsets it)."""
    widgets = pytest.importorskip("ipywidgets")
    from lape_lib.notebook import NO_WIDGETS_ENV
    from lape_lib.plotting import explore_similarity

    calls: list = []
    monkeypatch.setattr(widgets, "interact", lambda f, **sliders: calls.append(sorted(sliders)))
    monkeypatch.setattr(plt, "show", lambda: None)
    models = {"lape": create_model("vit_lite_7_4", join="lape", depth=2).eval()}
    monkeypatch.setenv(NO_WIDGETS_ENV, "1")
    explore_similarity(models, interactive=True)
    assert calls == []  # headless: the static figure
    monkeypatch.delenv(NO_WIDGETS_ENV)
    explore_similarity(models, interactive=True)
    explore_similarity(models, interactive=False)
    assert calls == [["layer", "patch"]]
    plt.close("all")
