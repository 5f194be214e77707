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
           epochs (about as many image-steps as 5 arms x 15 epochs), so it ends with intervals of its own
           (04: the toy task, 4 layers); the notebook measures this device and prints its estimate
           before it trains.
``paper``  the recipe: 300 + 10 epochs of Compact Transformers' CIFAR settings.
``auto``   ``cpu`` without a GPU, ``class`` with one. Never ``paper``: that is asked for by name.
``smoke``  not a choice: the tiny values smoke mode (``LAPE_SMOKE=1``: nbval, the browser test)
           swaps in before the preset fills the rest, so a notebook runs in seconds.
=========  ==================================================================================

``SETTINGS["zoo"]`` is the small pair ``zoo.trained_models`` trains when no saved weights exist.
A training notebook's trainer parameters are checked by ``training_params`` (types and choices
read from ``TrainConfig``) and turned into its ``TrainConfig`` by ``train_config``: one call each.
"""

from __future__ import annotations

import types
import typing
from types import SimpleNamespace
from typing import Any

from .augment import AugmentConfig
from .config import DATASET_CHOICES, TrainConfig, parse_join
from .models import list_models
from .notebook import Param, integer, smoke_mode
from .pos_embed import PE_TYPES

PRESETS = ("auto", "cpu", "class", "paper")
TRAINING_NOTEBOOKS = ("02_train_vitlite_cifar.ipynb", "04_pe_types_and_joins.ipynb")

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
        "smoke": {"model_overrides": {"depth": 2, "dim": 32, "num_heads": 2}, "n_train": 200, "n_test": 100, "epochs": 2,
                  "warmup_epochs": 1, "cooldown_epochs": 0, "batch_size": 50},
    },
    "04_pe_types_and_joins.ipynb": {
        "cpu": {"dataset": "toy", "model_overrides": {"depth": 2, "dim": 64, "num_heads": 2}, "n_train": 1000,
                "n_test": 400, "epochs": 6, "warmup_epochs": 1, "cooldown_epochs": 0, "batch_size": 50, "lr": 2e-3,
                "augment": False},
        "class": {"dataset": "toy", "model_overrides": {"depth": 4, "dim": 128, "num_heads": 4}, "n_train": 4000,
                  "n_test": 1000, "epochs": 10, "warmup_epochs": 1, "cooldown_epochs": 0, "batch_size": 100, "lr": 2e-3,
                  "augment": False},
        "paper": {"dataset": "cifar10", **_PAPER_RUN},
        "smoke": {"model_overrides": {"depth": 1, "dim": 32, "num_heads": 2}, "pes": ["learnable", "rpe", "none"],
                  "joins": ["add", "add@1.0", "add_norm", "lape"], "dataset": "toy", "n_train": 200, "n_test": 100,
                  "epochs": 2, "warmup_epochs": 1, "cooldown_epochs": 0, "batch_size": 50, "augment": False},
    },
    # zoo.trained_models' pair when no saved weights are found: the toy set, where position is all that matters.
    "zoo": {
        "cpu": {"model": "vit_lite_7_4", "model_overrides": {"depth": 4, "dim": 64, "num_heads": 4}, "dataset": "toy",
                "n_train": 1200, "n_test": 300, "epochs": 6, "warmup_epochs": 1, "cooldown_epochs": 0, "batch_size": 50,
                "lr": 2e-3, "augment": False},
        "smoke": {"model_overrides": {"depth": 2, "dim": 32, "num_heads": 2}, "n_train": 200, "n_test": 100, "epochs": 1,
                  "warmup_epochs": 0},
    },
}

# The trainer parameters each training notebook offers. A notebook's ``pe`` / ``seed`` is one value of
# the config's ``pes`` / ``seeds``; ``augment`` is a switch (the recipe's augmentation, or none).
NOTEBOOK_PARAMS: dict[str, tuple[str, ...]] = {
    "02_train_vitlite_cifar.ipynb": ("model", "model_overrides", "joins", "pe", "seeds", "dataset", "data_root", "download",
                                     "n_train", "n_test", "epochs", "warmup_epochs", "cooldown_epochs", "batch_size", "lr",
                                     "mix_off_epoch", "augment", "compile"),
    "04_pe_types_and_joins.ipynb": ("model", "model_overrides", "pes", "joins", "seed", "dataset", "data_root", "download",
                                    "n_train", "n_test", "epochs", "warmup_epochs", "cooldown_epochs", "batch_size", "lr",
                                    "augment"),
}
_ONE_OF = {"pe": "pes", "seed": "seeds"}  # notebook name -> the TrainConfig field it gives one value of
_POSITIVE = {"n_train", "n_test", "epochs", "batch_size", "lr"}
_AT_LEAST_ZERO = {"warmup_epochs", "cooldown_epochs", "seed"}


def _field_types(name: str) -> tuple[type, ...]:
    """The types a TrainConfig field takes, read from its annotation (``int | None`` -> (int, NoneType));
    for a notebook's ``pe`` / ``seed``, the item type of the tuple field it gives one value of."""
    hint = typing.get_type_hints(TrainConfig)[_ONE_OF.get(name, name)]
    if name in _ONE_OF:  # tuple[int, ...] -> int
        return (typing.get_args(hint)[0],)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(typing.get_origin(a) or a for a in typing.get_args(hint))
    return (typing.get_origin(hint) or hint,)


def _param(name: str, nullable: bool) -> Param:
    """How a notebook checks one trainer parameter: its type and choices from ``TrainConfig``."""
    kinds = _field_types(name)
    choices: Any = {"model": list_models(), "pes": PE_TYPES, "pe": PE_TYPES,
                    "dataset": tuple(d for d in DATASET_CHOICES if d != "imagefolder")}.get(name)
    if kinds == (tuple,):  # joins, pes, seeds: a list in a notebook
        kinds, each = (list,), True
    elif kinds == (AugmentConfig,):
        kinds, each = (bool,), False
    else:
        each = False
    if nullable and type(None) not in kinds:
        kinds = (*kinds, type(None))
    if choices is not None and nullable and not each:
        choices = (*choices, None)
    parse = {"joins": parse_join, "seeds": integer}.get(name)
    return Param(kinds if len(kinds) > 1 else kinds[0], choices, each=each, parse=parse, positive=name in _POSITIVE,
                 minimum=0 if name in _AT_LEAST_ZERO else None)


def training_params(notebook: str) -> dict[str, Param]:
    """The ``check`` spec of a training notebook's trainer parameters (and ``preset``,
    ``time_limit_minutes``): types and choices from ``TrainConfig``; None allowed where a preset
    fills the value; smoke values from ``SETTINGS[notebook]["smoke"]``."""
    presets = SETTINGS[notebook]
    filled = {k for name in ("cpu", "class", "paper") for k in presets[name]}
    spec: dict[str, Param] = {"preset": Param(str, PRESETS)}
    for name in NOTEBOOK_PARAMS[notebook]:
        param = _param(name, nullable=name in filled)
        if name in presets["smoke"]:
            param = Param(**{**vars(param), "smoke": presets["smoke"][name]})
        spec[name] = param
    spec["time_limit_minutes"] = Param((float, type(None)), positive=True)
    return spec


def config_values(values: dict[str, Any]) -> dict[str, Any]:
    """Notebook-form values (lists, ``pe``/``seed``, ``augment`` as a switch) as TrainConfig arguments."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name in _ONE_OF:
            out[_ONE_OF[name]] = (value,)
        elif name == "augment":
            out[name] = None if value is None else AugmentConfig() if value else AugmentConfig.off()
        else:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def train_config(p: SimpleNamespace, notebook: str, **fixed: Any) -> TrainConfig:
    """The run a training notebook's checked parameters ``p`` (preset applied) describe: the dataset's
    recipe under those values and ``fixed`` (``out_dir``, ``save_weights``...); None keeps the recipe's."""
    return TrainConfig.recipe(**config_values({name: getattr(p, name) for name in NOTEBOOK_PARAMS[notebook]}), **fixed)


def zoo_settings(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """TrainConfig arguments of zoo's fallback pair (smoke mode: its tiny version), under ``overrides``."""
    values = {**SETTINGS["zoo"]["cpu"], **(SETTINGS["zoo"]["smoke"] if smoke_mode() else {})}
    return {**config_values(values), **(overrides or {})}


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
    values = SETTINGS[notebook][preset]  # smoke values were swapped in by ``check`` already
    filled = {k: v for k, v in values.items() if getattr(p, k, None) is None}
    for k, v in filled.items():
        setattr(p, k, v)
    why = " (no GPU found)" if p.preset == "auto" and preset == "cpu" else " (a GPU was found)" if p.preset == "auto" else ""
    kept = sorted(k for k in values if k not in filled)
    print(f"preset {preset}{why}: " + ", ".join(f"{k}={v!r}" for k, v in filled.items())
          + (f"; set by you: {', '.join(kept)}" if kept else ""))
    return p


SESSION_MINUTES = 90  # a class period; Colab may also disconnect a runtime left alone for about this long


def announce(estimate: dict[str, Any], time_limit_minutes: float | None) -> None:
    """Print a run's estimated time (``lape_lib.speed.estimate_minutes``) and, when it is longer
    than a session, how to run it in pieces."""
    minutes = estimate["minutes"]
    print(f"estimated training time: about {minutes:.0f} min ({estimate['models']} models x {estimate['epochs']} epochs at "
          f"{estimate['images_per_s']:.0f} images/s measured on {estimate['device']}, {estimate['precision']})")
    if minutes > SESSION_MINUTES and time_limit_minutes is None:
        print(f"WARNING: that is longer than a {SESSION_MINUTES}-minute session (a class period; Colab may disconnect "
              "a runtime left alone for about as long). Set "
              "time_limit_minutes a little under what your session has left and keep output_dir on Google Drive: "
              "the call then ends on a checkpoint, and running the notebook again resumes it. Or choose a smaller preset.")
