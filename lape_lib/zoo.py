"""Trained models for the figures: load saved weights, or train a small pair on the spot.

The notebooks that show trained per-layer PEs (01, 03) call ``trained_models``: it loads
``{pe}-{join}-s{seed}.safetensors`` from the first folder that has them (an explicit one, the
workbook's own training output, then ``results/checkpoints`` in the repository, if someone has put
weights there: none are shipped) and otherwise
trains the pair briefly, on the toy set by default, where position is all that matters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checkpoint import load_model
from .models import VisionTransformer
from .config import TrainConfig, arm_name
from .notebook import smoke_mode
from .presets import resolve_preset, zoo_settings
from .train import train

REPO_CHECKPOINTS = Path(__file__).resolve().parents[1] / "results" / "checkpoints"


def find_weights(names: list[str], folders: list[str | Path | None]) -> Path | None:
    """The first folder that holds ``name.safetensors`` for every name."""
    for folder in folders:
        if folder is not None and all((Path(folder) / f"{n}.safetensors").is_file() for n in names):
            return Path(folder)
    return None


def notebook_02_weights(output_dir: str | Path, use: bool | None = None) -> Path | None:
    """Notebook 02's output folder as a place for ``trained_models`` to look, or None. ``use=None``
    (the notebooks' default): only where the training notebooks pick the ``class`` preset (a GPU),
    since 02's ``cpu`` run, 2 layers for 6 epochs, is too short for its PEs to take shape."""
    if use is None:
        use = resolve_preset("auto") != "cpu"
    return Path(output_dir) / "02_train" if use else None


def trained_models(
    folders: list[str | Path | None], *, joins: tuple[str, ...] = ("add", "lape"), pe: str = "learnable", seed: int = 0,
    fallback: dict[str, Any] | None = None, cache: str | Path | None = None,
) -> tuple[dict[str, VisionTransformer], str]:
    """Models keyed by join (on the CPU, in eval mode), and a sentence saying where they came from.

    A pair trained here (``presets.SETTINGS["zoo"]``, under ``fallback``: TrainConfig arguments) is
    saved under ``cache`` (if given), so the next notebook loads it.
    """
    names = [arm_name(seed, pe, j) for j in joins]
    if cache is not None and smoke_mode():
        cache = Path(cache) / "smoke"  # never mistake tiny smoke-mode models for real ones
    folder = find_weights(names, [*folders, cache, REPO_CHECKPOINTS])
    if folder is not None:
        return {j: load_model(folder / f"{n}.safetensors") for j, n in zip(joins, names)}, f"loaded from {folder}"
    settings = {**zoo_settings(fallback), "progress": False}
    cfg = TrainConfig(joins=joins, pes=(pe,), seeds=(seed,), out_dir=str(cache) if cache else None,
                      save_weights=cache is not None, **settings)
    results = train(cfg)
    accs = ", ".join(f"{j}: {results['arms'][n]['final'].get('test_acc', float('nan')):.1f}%" for j, n in zip(joins, names))
    # On the CPU, as loaded ones are: the notebooks plot them and feed them CPU images.
    models = {j: results["models"][n].eval().cpu() for j, n in zip(joins, names)}
    saved = f"; saved to {cache}" if cache else ""
    return models, f"trained just now on {cfg.dataset} for {cfg.epochs} epochs ({accs}); no saved weights were found{saved}"


def initial_like(model: VisionTransformer, seed: int = 0) -> VisionTransformer:
    """A freshly initialized model of the same config as ``model`` (as the trainer draws it from
    ``seed``), in eval mode: the "before" beside a trained model."""
    import torch

    from .models import describe, from_description

    torch.manual_seed(seed)
    return from_description(describe(model)).eval()
