"""Figures for the workbook: per-layer PE similarity and relative bias, learning curves, bar charts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from .analysis import pe_similarity, per_layer_attn_bias, per_layer_pe
from .models import VisionTransformer
from .notebook import widgets_wanted
from .config import arm_label


def central_patch(grid: tuple[int, int]) -> int:
    """The index of a central patch of the grid (the paper plots one such row)."""
    h, w = grid
    return (h // 2) * w + w // 2 - 1 if w > 1 else (h // 2) * w


def _layer_panel(ax: plt.Axes, panel: torch.Tensor, title: str | None, ylabel: str | None, **imshow: Any) -> Any:
    """One cell of a (row per model, column per layer) grid: the image, no ticks, labels on the edges."""
    image = ax.imshow(panel.numpy(), **imshow)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8)
    return image


def plot_layer_similarity(
    models: Mapping[str, VisionTransformer], patch: int | None = None, show_matrix: bool = True
) -> Figure:
    """For each model (a row pair) and each layer (a column): the PE's N x N cosine-similarity
    matrix and one patch's similarity on the patch grid (the patch marked with a black cross).

    The colour scale is a diverging −1..1 (blue negative, white 0, red 1): cosine similarities
    of PE rows are often negative, which the paper's 0..1 scale would clip to one colour.
    """
    names = list(models)
    depth = max(m.cfg.depth for m in models.values())
    rows = len(names) * (2 if show_matrix else 1)
    fig, axes = plt.subplots(rows, depth, figsize=(1.6 * depth, 1.7 * rows), squeeze=False)
    image = None
    for i, name in enumerate(names):
        model = models[name]
        sims = pe_similarity(per_layer_pe(model)).cpu()
        p = central_patch(model.grid) if patch is None else patch
        n = model.grid[0] * model.grid[1]
        if not 0 <= p < n:
            raise ValueError(f"patch {p} is not on {name}'s {model.grid[0]}x{model.grid[1]} patch grid; choose 0..{n - 1}")
        for l in range(depth):
            patch_map = sims[l, p].reshape(model.grid)
            panels = [sims[l], patch_map] if show_matrix else [patch_map]
            for k, panel in enumerate(panels):
                title = f"layer {l + 1}" if i == 0 and k == 0 else None
                ylabel = f"{name}\n{'matrix' if show_matrix and k == 0 else f'patch {p}'}" if l == 0 else None
                ax = axes[i * len(panels) + k, l]
                image = _layer_panel(ax, panel, title, ylabel, vmin=-1, vmax=1, cmap="RdBu_r")
                if panel is patch_map:
                    ax.plot(p % model.grid[1], p // model.grid[1], "x", color="black", ms=5, mew=1.2)
    assert image is not None  # every model has at least one layer
    fig.colorbar(image, ax=axes, shrink=0.6, label="cosine similarity")
    return fig


def explore_similarity(models: Mapping[str, VisionTransformer], patch: int | None = None, interactive: bool = True) -> None:
    """One patch's PE similarity map per model, at one layer: with a layer slider and a patch slider
    where ipywidgets is installed and ``interactive`` (notebook 03's explorer; not in a headless run,
    ``notebook.NO_WIDGETS_ENV``), else the figure for layer 1 and ``patch`` (None: a central one)."""
    sims = {join: pe_similarity(per_layer_pe(m)) for join, m in models.items()}
    grid = next(iter(models.values())).grid
    start = central_patch(grid) if patch is None else patch

    def show(layer: int = 1, patch: int = start) -> None:
        fig, axes = plt.subplots(1, len(sims), figsize=(3.2 * len(sims), 3), squeeze=False)
        for ax, (join, s) in zip(axes[0], sims.items()):
            ax.imshow(s[layer - 1, patch].reshape(grid).numpy(), vmin=-1, vmax=1, cmap="RdBu_r")
            ax.plot(patch % grid[1], patch // grid[1], "x", color="black", ms=10, mew=2)
            ax.set_title(f"{join}: layer {layer}, patch {patch}")
            ax.axis("off")
        plt.show()

    try:
        import ipywidgets as widgets
    except ImportError:
        widgets = None
    if widgets_wanted(interactive) and widgets is not None:
        depth = len(next(iter(sims.values())))
        widgets.interact(show, layer=widgets.IntSlider(1, 1, depth), patch=widgets.IntSlider(start, 0, grid[0] * grid[1] - 1))
    else:
        show()


def plot_layer_attn_bias(models: Mapping[str, VisionTransformer], patch: int | None = None) -> Figure:
    """For each ``pe="rpe"`` model (a row) and layer (a column): the bias one patch's query adds
    to every key, on the patch grid, averaged over heads (the patch marked with a cross). One
    colour scale per row, centred on 0, its limit (the row's largest |bias|) in the row label: a
    LayerNormed (``lape``) row is near unit scale whatever was learned, an ``add`` row shows how
    far its table has grown from 0. A panel that is all white is a bias still at its init, 0."""
    names = list(models)
    depth = max(m.cfg.depth for m in models.values())
    fig, axes = plt.subplots(len(names), depth, figsize=(1.6 * depth + 0.8, 1.7 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        model = models[name]
        p = central_patch(model.grid) if patch is None else patch
        maps = per_layer_attn_bias(model)[:, :, p].mean(dim=1).reshape(-1, *model.grid).cpu()
        limit = max(float(maps.abs().max()), 1e-6)
        for l in range(depth):
            image = _layer_panel(axes[i, l], maps[l], f"layer {l + 1}" if i == 0 else None,
                                 f"{name}\npatch {p}, ±{limit:.2g}" if l == 0 else None, vmin=-limit, vmax=limit, cmap="RdBu_r")
            axes[i, l].plot(p % model.grid[1], p // model.grid[1], "x", color="black", ms=5)
        fig.colorbar(image, ax=axes[i].tolist(), shrink=0.8, label="bias")
    return fig


def _patch_distances(grid: tuple[int, int]) -> torch.Tensor:
    h, w = grid
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 2).float()
    return torch.cdist(coords, coords)


def similarity_by_distance(model: VisionTransformer, min_pairs: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Mean PE cosine similarity of patch pairs at each (rounded) grid distance, per layer.

    Returns ``(distances, table)`` with ``table[l, k]`` the mean similarity in layer l of pairs
    at distance ``distances[k]`` (distances from 1 up; a distance with fewer than ``min_pairs``
    pairs, such as the two corners of an 8x8 grid, is left out: its mean is noise). A flat curve
    means position is barely encoded, a steep one a local PE.
    """
    sims = pe_similarity(per_layer_pe(model)).cpu()
    dist = _patch_distances(model.grid).round().long()
    distances = torch.unique(dist)
    distances = torch.tensor([int(d) for d in distances if d > 0 and int((dist == d).sum()) >= min_pairs])
    table = torch.stack([torch.stack([s[dist == d].mean() for d in distances]) for s in sims])
    return distances.numpy(), table.numpy()


def locality(model: VisionTransformer) -> np.ndarray:
    """Per layer: mean PE similarity of neighbouring patches (distance <= 1.5: the 8 around a patch)
    minus that of far ones (distance >= half the grid's diagonal). Both averages hold hundreds of
    pairs on an 8x8 grid; larger means a more local PE, near 0 a PE that tells positions apart
    no better nearby than far away."""
    sims = pe_similarity(per_layer_pe(model)).cpu()
    dist = _patch_distances(model.grid)
    near, far = (dist > 0) & (dist <= 1.5), dist >= dist.max() / 2
    return torch.stack([s[near].mean() - s[far].mean() for s in sims]).numpy()


def plot_similarity_by_distance(models: Mapping[str, VisionTransformer]) -> Figure:
    """One panel per model: PE similarity against patch distance, one curve per layer."""
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.2), squeeze=False, sharey=True)
    for ax, (name, model) in zip(axes[0], models.items()):
        distances, table = similarity_by_distance(model)
        colours = plt.cm.plasma(np.linspace(0, 0.9, len(table)))
        for l, row in enumerate(table):
            ax.plot(distances, row, color=colours[l], label=f"layer {l + 1}")
        ax.set_title(name)
        ax.set_xlabel("distance between patches (grid cells)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("mean PE cosine similarity")
    axes[0, -1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


CHANCE = {"cifar10": 10.0, "cifar100": 1.0, "toy": 25.0}  # top-1 (%) of a uniform guess


def run_setting(results: Mapping[str, Any]) -> str:
    """The setting of a ``train`` results dict in one line: model, data, epochs, seeds."""
    cfg = results["config"]
    extra = ", ".join(f"{k}={v}" for k, v in sorted(cfg.get("model_overrides", {}).items()))
    seeds = sorted({arm["seed"] for arm in results["arms"].values()})
    images = f"{cfg['n_train']:,} images" if cfg.get("n_train") else "all images"
    return (f"{cfg['model']}{f' ({extra})' if extra else ''}, {cfg['dataset']} ({images}), "
            f"{cfg['epochs'] + cfg.get('cooldown_epochs', 0)} epochs, seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}")


def plot_history(results: Mapping[str, Any], metric: str = "test_acc") -> Figure:
    """Learning curves of every arm in a ``train`` results dict: ``metric`` and the training loss.

    One colour per (PE, join), one line per seed: paired seeds read as a band per join. The title
    gives the setting; a dotted line marks chance accuracy.
    """
    fig, (ax_m, ax_l) = plt.subplots(1, 2, figsize=(10, 3.6))
    fig.suptitle(run_setting(results), fontsize=9)
    chance = CHANCE.get(results["config"]["dataset"])
    if metric == "test_acc" and chance is not None:
        ax_m.axhline(chance, color="0.4", ls=":", lw=1, label=f"chance ({chance:g} %)")
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for arm in results["arms"].values():
        groups.setdefault(f"{arm['pe']}-{arm_label(arm)}", []).append(arm)
    colours = [plt.get_cmap("tab10")(i) for i in range(10)]
    for k, (group, arms) in enumerate(groups.items()):
        colour = colours[k % len(colours)]
        style = "-" if "lape" in group else "--"
        label = group if len(arms) == 1 else f"{group} ({len(arms)} seeds)"
        alpha = 1.0 if len(arms) == 1 else 0.7
        for i, arm in enumerate(arms):
            hist = arm["history"]
            kw = dict(color=colour, alpha=alpha, label=label if i == 0 else None)
            ax_l.plot([h["epoch"] + 1 for h in hist], [h["train_loss"] for h in hist], style, **kw)
            pts = [(h["epoch"] + 1, h[metric]) for h in hist if metric in h]
            if pts:
                ax_m.plot(*zip(*pts), style, marker="o" if len(pts) < 20 else None, markersize=4, **kw)
    ax_m.set_ylabel("test top-1 (%)" if metric == "test_acc" else metric)
    ax_l.set_ylabel("training loss")
    for ax in (ax_m, ax_l):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    ax_m.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_grouped_bars(table: Mapping[str, Mapping[str, float]], ylabel: str = "test top-1 (%)",
                      errors: Mapping[str, Mapping[str, float]] | None = None, title: str | None = None,
                      chance: float | None = None) -> Figure:
    """Bars grouped by the outer key (e.g. PE type), one colour per inner key (e.g. join); an
    optional title (the setting) and a dotted line at ``chance``."""
    groups = list(table)
    members: list[str] = list(dict.fromkeys(k for g in groups for k in table[g]))
    width = 0.8 / len(members)
    fig, ax = plt.subplots(figsize=(2.8 + 1.5 * len(groups), 3.4))
    for j, member in enumerate(members):
        xs = [i + (j - (len(members) - 1) / 2) * width for i, g in enumerate(groups) if member in table[g]]
        ys = [table[g][member] for g in groups if member in table[g]]
        err = [errors[g][member] for g in groups if member in table[g]] if errors else None
        ax.bar(xs, ys, width, yerr=err, label=member, capsize=3)
    if chance is not None:
        ax.axhline(chance, color="0.3", ls=":", lw=1, label=f"chance ({chance:g} %)")
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _seeds_and_interval(ax: plt.Axes, x: float, d: Mapping[str, Any], first: bool, *, colour: str, alpha: float,
                        spread: float, offset: float) -> None:
    """One paired difference at ``x``: its per-seed values as dots, its mean with the 95 % interval as a bar."""
    seeds = d["per_seed"]
    ax.plot([x + spread * (k - (len(seeds) - 1) / 2) for k in range(len(seeds))], seeds, "o", color=colour, alpha=alpha,
            label="one seed" if first else None)
    err = None if d["ci"] is None else [[d["mean"] - d["ci"][0]], [d["ci"][1] - d["mean"]]]
    ax.errorbar([x + offset], [d["mean"]], yerr=err, fmt="s", color="C1", capsize=4, label="mean, 95 % CI" if first else None)


def plot_paired_differences(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Per-seed ``treatment - baseline`` (dots), their mean with its 95 % interval (bar) and the
    paper's difference (cross), one column per comparison from :func:`lape_lib.report.compare`."""
    fig, ax = plt.subplots(figsize=(2.5 + 1.3 * len(rows), 3.4))
    for i, row in enumerate(rows):
        d = row["difference"]
        if d is None:
            continue
        _seeds_and_interval(ax, i, d, i == 0, colour="C0", alpha=0.6, spread=0.08, offset=0.3)
        if row.get("published"):
            ax.plot([i + 0.45], [row["published"]["difference"]], "x", color="C3", markersize=8,
                    label="paper" if i == 0 else None)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(range(len(rows)), [f"{r['model']}\n{r['pe']}, {r['epochs']} ep" for r in rows], fontsize=8)
    ax.set_ylabel(f"{rows[0]['treatment']} − {rows[0]['baseline']} (top-1 points)" if rows else "difference")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_factors(row: Mapping[str, Any]) -> Figure:
    """The factor steps of one :func:`lape_lib.report.compare_arms` row: per-seed differences
    (dots) and their mean with its 95 % interval (bar), one column per step: the steps that add up
    to the total, the total, then (grey, after a dashed line) the side comparisons, which are not
    terms of that sum."""
    chain = [f for f in row["factors"] if f.get("kind") != "side"]
    side = [f for f in row["factors"] if f.get("kind") == "side"]
    steps = [*chain, *([{**row["total"], "factor": "total"}] if row.get("total") else []), *side]
    fig, ax = plt.subplots(figsize=(2.2 + 1.25 * len(steps), 3.6))
    for i, d in enumerate(steps):
        colour = "C3" if d["factor"] == "total" else "0.5" if d in side else "C0"
        _seeds_and_interval(ax, i, d, i == 0, colour=colour, alpha=0.5, spread=0.06, offset=0.25)
    if side:
        ax.axvline(len(steps) - len(side) - 0.5, color="0.5", ls="--", lw=0.8)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(range(len(steps)), [f"{d['factor']}\n{d['to']}\n− {d['from']}" + ("\n(side)" if d in side else "")
                                      for d in steps], fontsize=7)
    ax.set_ylabel("difference (top-1 points)")
    ax.set_title(f"{row['model']}, {row['dataset']}, {row['epochs']} ep, {len(steps[0]['per_seed'])} seeds", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def show_images(images: torch.Tensor, labels: Sequence[str], ncols: int = 8) -> Figure:
    """A grid of uint8 (N, 3, H, W) images with their labels."""
    n = len(images)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.45 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, label in zip(axes.flat, images, labels):
        ax.imshow(img.permute(1, 2, 0).cpu().numpy())
        ax.set_title(label, fontsize=8)
    fig.tight_layout()
    return fig


def show_patch_grid(image: torch.Tensor, patch_size: int = 4, mark: int | None = None) -> Figure:
    """One uint8 (3, H, W) image cut into its patch grid, each patch labelled with its index
    (the row of ``per_layer_pe`` and of the similarity maps), ``mark`` outlined."""
    _, h, w = image.shape
    cols = w // patch_size
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    ax.imshow(image.permute(1, 2, 0).cpu().numpy(), extent=(0, w, h, 0), interpolation="nearest")
    for k in range(0, max(h, w) + 1, patch_size):
        ax.axhline(k, color="white", lw=0.6)
        ax.axvline(k, color="white", lw=0.6)
    for i in range((h // patch_size) * cols):
        r, c = divmod(i, cols)
        # A dark box behind each index keeps it readable on light patches (sky, white cars).
        ax.text(c * patch_size + patch_size / 2, r * patch_size + patch_size / 2, str(i), ha="center", va="center",
                fontsize=6, color="yellow" if i == mark else "white",
                bbox={"boxstyle": "round,pad=0.15", "facecolor": "black", "alpha": 0.5, "linewidth": 0})
    if mark is not None:
        r, c = divmod(mark, cols)
        ax.add_patch(plt.Rectangle((c * patch_size, r * patch_size), patch_size, patch_size, fill=False, color="yellow", lw=2))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{h // patch_size}x{cols} patches of {patch_size}x{patch_size} pixels: one token each", fontsize=9)
    fig.tight_layout()
    return fig


def diagram(name: str = "add_vs_lape") -> Any:
    """A diagram shipped with the package (``lape_lib/assets/<name>.svg``), for ``display``: it shows
    in an executed copy of a notebook and on Colab, where a relative link to the repository does not."""
    from importlib.resources import files

    from IPython.display import SVG

    path = files("lape_lib") / "assets" / f"{name}.svg"
    if not path.is_file():
        known = sorted(p.name.removesuffix(".svg") for p in (files("lape_lib") / "assets").iterdir() if p.name.endswith(".svg"))
        raise ValueError(f"no diagram {name!r}; the package has {known}")
    return SVG(data=path.read_text())
