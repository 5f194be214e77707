"""Presets: the settings a notebook trains with when its parameters leave them to the machine.

A training notebook's parameters cell has ``preset = "auto"`` and leaves the size of the run
(``epochs``, ``n_train``, ...) at ``None``; ``apply_preset`` fills every ``None`` from the
preset, so "Run all" in JupyterLab or Colab, which injects no parameters, gets a run that suits
the machine, and a value the user sets always wins.

=========  ==================================================================================
``cpu``    minutes on a 2-core CPU: ViT-Lite cut to 2 layers, 2,000 CIFAR-10 images, 6 epochs
           (notebook 04: the toy position task with a 64-wide model).
``class``  a class period on one GPU (a Colab T4): the full model on all of CIFAR-10 without
           augmentation; notebook 02 trains ``add``, ``add@1.0`` and ``lape`` on seeds 0-2 for 8
           epochs (as many image-steps as 5 arms x 15 epochs), so it ends with intervals of its own
           (04: the toy task, 4 layers); the notebook measures this device and prints its estimate
           before it trains.
``paper``  the recipe: 300 + 10 epochs of Compact Transformers' CIFAR settings.
``auto``   ``cpu`` without a GPU, ``class`` with one. Never ``paper``: that is asked for by name.
=========  ==================================================================================
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

PRESETS = ("auto", "cpu", "class", "paper")

# The paper's settings are the trainer's own (TrainConfig.recipe): None leaves them to it.
_PAPER_RUN: dict[str, Any] = {"model_overrides": {}, "n_train": None, "n_test": None, "epochs": 300, "warmup_epochs": 10,
                              "cooldown_epochs": 10, "batch_size": 128, "lr": None, "augment": True}

_CONTROL_ARMS = ["add", "add@1.0", "add_norm", "lape_shared", "lape"]
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "02_train_vitlite_cifar.ipynb": {
        # Measured: a full ViT-Lite-7/4 trains at 60-125 images/s on 2 cores, so the CPU run keeps its
        # width but cuts it to 2 layers and drops the heavy augmentation, which pays off over hundreds of epochs.
        "cpu": {"model_overrides": {"depth": 2}, "n_train": 2000, "n_test": 1000, "epochs": 6, "warmup_epochs": 1,
                "cooldown_epochs": 0, "batch_size": 64, "lr": 1e-3, "augment": False, "joins": _CONTROL_ARMS, "seeds": [0]},
        # Three seeds of the scale comparison: enough for paired intervals in a class period.
        "class": {"model_overrides": {}, "n_train": None, "n_test": None, "epochs": 8, "warmup_epochs": 1,
                  "cooldown_epochs": 0, "batch_size": 128, "lr": 1e-3, "augment": False,
                  "joins": ["add", "add@1.0", "lape"], "seeds": [0, 1, 2]},
        "paper": {**_PAPER_RUN, "joins": _CONTROL_ARMS, "seeds": [0]},
    },
    "04_pe_types_and_joins.ipynb": {
        "cpu": {"dataset": "toy", "model_overrides": {"depth": 2, "dim": 64, "num_heads": 2}, "n_train": 1000,
                "n_test": 400, "epochs": 6, "warmup_epochs": 1, "cooldown_epochs": 0, "batch_size": 50, "lr": 2e-3,
                "augment": False},
        "class": {"dataset": "toy", "model_overrides": {"depth": 4, "dim": 128, "num_heads": 4}, "n_train": 4000,
                  "n_test": 1000, "epochs": 10, "warmup_epochs": 1, "cooldown_epochs": 0, "batch_size": 100, "lr": 2e-3,
                  "augment": False},
        "paper": {"dataset": "cifar10", **_PAPER_RUN},
    },
}


def resolve_preset(name: str, gpu: bool | None = None) -> str:
    """``auto`` -> ``class`` with a GPU, ``cpu`` without; other names as they are (checked)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESETS}")
    if name != "auto":
        return name
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    return "class" if gpu else "cpu"


def apply_preset(p: SimpleNamespace, notebook: str, gpu: bool | None = None) -> SimpleNamespace:
    """Fill every parameter of ``p`` that is None and that the preset sets; print what it set.

    ``p.preset`` names the preset. Values the user gave (not None) are kept as they are.
    """
    preset = resolve_preset(p.preset, gpu)
    values = SETTINGS[notebook][preset]
    filled = {k: v for k, v in values.items() if getattr(p, k, None) is None}
    for k, v in filled.items():
        setattr(p, k, v)
    why = " (no GPU found)" if p.preset == "auto" and preset == "cpu" else " (a GPU was found)" if p.preset == "auto" else ""
    kept = sorted(k for k in values if k not in filled)
    print(f"preset {preset}{why}: " + ", ".join(f"{k}={v!r}" for k, v in filled.items())
          + (f"; set by you: {', '.join(kept)}" if kept else ""))
    return p


SESSION_MINUTES = 90  # about what a free Colab session or a class period gives


def announce(estimate: dict[str, Any], time_limit_minutes: float | None) -> None:
    """Print a run's estimated time (``lape_lib.train.estimate_minutes``) and, when it is longer
    than a session, how to run it in pieces."""
    minutes = estimate["minutes"]
    print(f"estimated training time: about {minutes:.0f} min ({estimate['models']} models x {estimate['epochs']} epochs at "
          f"{estimate['images_per_s']:.0f} images/s measured on {estimate['device']}, {estimate['precision']})")
    if minutes > SESSION_MINUTES and time_limit_minutes is None:
        print(f"WARNING: that is longer than a typical session (about {SESSION_MINUTES} min on Colab). Set "
              "time_limit_minutes a little under what your session has left and keep output_dir on Google Drive: "
              "the call then ends on a checkpoint, and running the notebook again resumes it. Or choose a smaller preset.")
