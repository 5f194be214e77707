"""A training run as plain values: ``TrainConfig``, its recipes, and what names and identifies its arms.

    TrainConfig.recipe("cifar10", joins=("add", "add@1.0", "lape"), seeds=(0, 1, 2), epochs=300)

Validated when made: a bad value fails here, naming itself and what would be valid, before any
data is read. ``fingerprint`` is what identifies a run (a checkpoint resumes only under the same
one); ``RUNTIME_FIELDS`` are what it leaves out, and the report reads the same list.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .augment import AugmentConfig
from .data import load_cifar, load_imagefolder
from .images import DATASETS, EXPECTED_COUNTS, ImageDataset
from .synthetic import QUADRANTS, make_position_toy
from .models import JOINS, combination_problem, create_model, list_models, resolve_config, valid_combination
from .pos_embed import PE_TYPES
from .stream import open_imagefolder

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
RECIPES = ("cifar10", "cifar100", "deit")
DATASET_CHOICES = DATASETS + ("toy", "imagefolder")
TIMM_PREFIX = "timm/"
# The layout of results.json: 2 added schema, data_identity and data_sources (files without "schema" are 1).
RESULTS_SCHEMA = 2
TOY_SIZES = (2000, 500)  # the toy set's train and test images when n_train / n_test are None
# Fields that do not change what is computed: a checkpoint may be resumed under other values, and
# the report puts runs that differ only in these in one row (with the arm fields, REPORT_FREE_FIELDS).
RUNTIME_FIELDS = ("out_dir", "device", "compile", "compile_mode", "cuda_graph", "eval_every", "progress", "save_weights",
                  "data_root", "workers", "download")
# What a report row pools over: the runtime fields and which arms a run trained (seeds, joins, pes).
REPORT_FREE_FIELDS = (*RUNTIME_FIELDS, "seeds", "joins", "pes")


@dataclass
class TrainConfig:
    """A training run as plain values. Defaults: the Compact Transformers CIFAR-10 recipe."""

    model: str = "vit_lite_7_4"
    joins: tuple[str, ...] = ("add", "lape")  # each a join, or JOIN@STD: its learnable PE initialized with that std
    pes: tuple[str, ...] = ("learnable",)
    seeds: tuple[int, ...] = (0,)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    dataset: str = "cifar10"  # cifar10 | cifar100 | toy | imagefolder (needs data_root)
    data_root: str | None = None
    stream: bool = False  # imagefolder only: read images from disk in DataLoader workers (ImageNet-scale)
    workers: int = 8  # DataLoader workers when streaming
    img_size: int = 32
    download: bool = False
    n_train: int | None = None
    n_test: int | None = None
    epochs: int = 300
    cooldown_epochs: int = 10
    warmup_epochs: int = 10
    batch_size: int = 128
    lr: float = 5.5e-4
    warmup_lr: float = 1e-5
    min_lr: float = 1e-5
    weight_decay: float = 0.06
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mix_off_epoch: int | None = 175  # CIFAR-10 turns mixup/cutmix off after this epoch; None (or -1): never
    precision: str = "auto"
    compile: bool = False
    compile_mode: str | None = None  # torch.compile mode, e.g. "reduce-overhead" (CUDA graphs) on a GPU
    stack_seeds: bool = False  # train the seeds of each (pe, join) as one vmapped model (lape_lib.stack)
    cuda_graph: bool = False  # replay each model's whole step from one CUDA graph (lape_lib.graphs): GPU, bf16/fp32
    device: str = "auto"
    eval_every: int = 1
    out_dir: str | None = None
    save_weights: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()}
            self.augment = AugmentConfig(**kwargs)
        self.joins, self.pes, self.seeds = tuple(self.joins), tuple(self.pes), tuple(int(s) for s in self.seeds)
        if self.mix_off_epoch == -1:  # the command line's and the notebooks' spelling of "never"
            self.mix_off_epoch = None
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad value and what would be valid."""
        if self.model.startswith(TIMM_PREFIX):
            import timm

            if not timm.is_model(self.model[len(TIMM_PREFIX):]):
                raise ValueError(f"unknown timm model {self.model!r}; see timm.list_models('*vit*') or '*deit*'")
            bad = [j for j in self.joins if j not in ("add", "lape")] + [p for p in self.pes if p != "learnable"]
            if bad:
                raise ValueError(f"timm models run with joins 'add'/'lape' and pe 'learnable' only, got {bad[0]!r}")
            if self.save_weights:
                raise ValueError(f"save_weights writes lape_lib models' safetensors (lape_lib.zoo reads them); {self.model!r} "
                                 "is a timm model: leave save_weights off (train() returns the final models in "
                                 "results['models']; a checkpoint.pt, where one is written, holds the last checkpointed epoch's)")
        elif self.model not in list_models():
            raise ValueError(f"unknown model {self.model!r}; choose one of {list_models()} or 'timm/<name>'")
        else:  # a bad override fails here, before any data is read
            resolve_config(self.model, self.model_overrides, "learnable", "add")
        for j in self.joins:
            parse_join(j)
        for name in ("joins", "pes", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} {list(values)} names {sorted({v for v in values if values.count(v) > 1})} twice; "
                                 "each arm is trained once")
        arms = [parse_join(j) for j in self.joins]
        for i, arm in enumerate(arms):  # add@1.0 and add@1 are one arm: trained twice, they would pair with themselves
            if arm in arms[:i]:
                raise ValueError(f"joins {list(self.joins)} name the same arm twice ({self.joins[arms.index(arm)]!r} and "
                                 f"{self.joins[i]!r}); each arm is trained once")
        for p in self.pes:
            if p not in PE_TYPES:
                raise ValueError(f"unknown pe {p!r}; choose from {PE_TYPES}")
        if self.dataset not in DATASET_CHOICES:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {DATASET_CHOICES}")
        if self.dataset == "imagefolder" and not self.data_root:
            raise ValueError("dataset='imagefolder' needs data_root: a folder with train/<class>/ and val/<class>/")
        if self.stream and self.dataset != "imagefolder":
            raise ValueError(f"stream=True reads an ImageFolder tree from disk; dataset {self.dataset!r} is held in memory")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        a = self.augment
        if self.dataset == "toy" and (a.flip or a.crop_scale is not None or a.randaug_ops > 0):
            raise ValueError(
                "dataset='toy' labels are positions, which flips, crops and RandAugment's geometry change; "
                "use augment=AugmentConfig.off() (CLI: --no-augment)"
            )
        if self.cuda_graph and self.compile:
            raise ValueError("cuda_graph and compile are alternatives: the graph captures the eager step; choose one")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        if not self.joins or not self.pes or not self.seeds:
            raise ValueError("joins, pes and seeds each need at least one value")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("cooldown_epochs", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.warmup_epochs >= self.epochs and self.epochs > 1:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs})")
        if self.mix_off_epoch is not None and self.mix_off_epoch < 0:
            raise ValueError(f"mix_off_epoch must be an epoch >= 0, or None / -1 for never; got {self.mix_off_epoch}")
        for name in ("lr", "min_lr", "warmup_lr", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{name} must be a number of images >= 1, or None for the whole split; got {value!r}")
        for name in ("img_size", "eval_every"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.dataset in DATASETS and self.img_size != 32:  # CIFAR's images are 32 x 32; nothing resizes them
            raise ValueError(f"img_size {self.img_size} with dataset {self.dataset!r}: its images are 32 x 32; use img_size=32")
        for s in self.seeds:
            if not 0 <= s < 2**31:
                raise ValueError(f"seed {s} is out of range; seeds are integers in [0, 2**31)")
        if self.out_dir is not None and not str(self.out_dir).strip():
            raise ValueError("out_dir is empty; give a folder, or None to write nothing")
        if self.device != "auto":
            try:
                kind = torch.device(self.device).type
            except (RuntimeError, TypeError):
                kind = None
            if kind not in ("cpu", "cuda", "mps"):  # 'meta' and the like hold no data to train on
                raise ValueError(f"unknown device {self.device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"unknown compile_mode {self.compile_mode!r}; choose one of {COMPILE_MODES}")
        if not self.arms():
            why = sorted({problem for p in self.pes for j in self.joins
                          if (problem := combination_problem(p, parse_join(j)[0])) is not None})
            raise ValueError(f"no (pe, join) combination of pes {list(self.pes)} and joins {list(self.joins)} can work: "
                             + ("; ".join(why) or "JOIN@STD sets a learnable PE's init std, and no pe here is 'learnable'"))

    @classmethod
    def recipe(cls, name: str | None = None, **overrides: Any) -> TrainConfig:
        """A recipe's defaults (one of ``RECIPES``) under ``overrides``; an override of None keeps
        the recipe's value. Without a name: CIFAR-100's recipe for ``dataset="cifar100"``, else CIFAR-10's."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if name is None:
            name = "cifar100" if overrides.get("dataset") == "cifar100" else "cifar10"
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; choose one of {RECIPES}")
        makers: dict[str, Callable[..., TrainConfig]] = {"cifar10": cls, "cifar100": cls.cifar100, "deit": cls.deit}
        return makers[name](**overrides)

    @classmethod
    def cifar100(cls, **overrides: Any) -> TrainConfig:
        """Compact Transformers' CIFAR-100 recipe: CIFAR-10's with lr 6e-4, warmup from 1e-6, and
        mixup/cutmix kept on to the end."""
        return cls(**{"dataset": "cifar100", "lr": 6e-4, "warmup_lr": 1e-6, "mix_off_epoch": None, **overrides})

    @classmethod
    def deit(cls, **overrides: Any) -> TrainConfig:
        """DeiT's ImageNet recipe (Touvron et al. 2021) for ``timm/deit_*`` models at 224 px.

        AdamW lr 5e-4 x batch/512, wd 0.05, 300 epochs (5 warmup from 1e-6, cooldown 10),
        RandAugment m9, mixup 0.8 / cutmix 1.0 throughout, random erasing 0.25, crops from
        8-100 % of the image (taken in the loader's workers: the images are streamed from disk).
        Not included: repeated augmentation and EMA.
        """
        batch = overrides.get("batch_size", 1024)
        base: dict[str, Any] = dict(
            model="timm/deit_tiny_patch16_224", joins=("add", "lape"), dataset="imagefolder", stream=True, img_size=224,
            batch_size=batch, lr=5e-4 * batch / 512, warmup_lr=1e-6, min_lr=1e-5, weight_decay=0.05, epochs=300,
            warmup_epochs=5, cooldown_epochs=10, mix_off_epoch=None, model_overrides={"drop_path_rate": 0.1},
            augment=AugmentConfig(crop_scale=(0.08, 1.0)),
        )
        return cls(**{**base, **overrides})

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.cooldown_epochs

    def arms(self) -> list[tuple[int, str, str]]:
        """Every (seed, pe, join) this run trains, skipping combinations that cannot work (and a
        ``JOIN@STD`` for a PE that has no init std: only a learnable one has)."""
        return [(s, p, j) for s in self.seeds for p in self.pes for j in self.joins
                if valid_combination(p, parse_join(j)[0]) and (parse_join(j)[1] is None or p == "learnable")]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    def fingerprint(self) -> dict[str, Any]:
        d = self.to_dict()
        return {k: v for k, v in d.items() if k not in RUNTIME_FIELDS}


# The fields of a recipe (``TrainConfig.recipe``) a run must share with the paper's for its figure
# to be set beside the run: the whole training and test sets, the schedule, batch, optimizer and
# augmentation. Precision, compile and stacking change how a step runs, not what it computes.
RECIPE_FIELDS = ("img_size", "n_train", "n_test", "epochs", "cooldown_epochs", "warmup_epochs", "batch_size", "lr",
                 "warmup_lr", "min_lr", "weight_decay", "augment", "mix_off_epoch")


def has_published_recipe(cfg: Mapping[str, Any]) -> bool:
    """Whether a run's setting has its dataset's published recipe on every ``RECIPE_FIELDS`` field
    (DeiT's for an ImageFolder run, its lr scaled to the run's batch as the recipe scales it);
    False for a dataset no recipe is for (the toy set)."""
    if cfg["dataset"] not in (*DATASETS, "imagefolder"):
        return False
    if cfg["dataset"] == "imagefolder":
        recipe = TrainConfig.recipe("deit", batch_size=cfg.get("batch_size"), data_root=".")  # the root is not compared
    else:
        recipe = TrainConfig.recipe(dataset=cfg["dataset"])
    expected = recipe.to_dict()
    return all(cfg.get(k) == expected[k] for k in RECIPE_FIELDS)


def parse_join(spec: str) -> tuple[str, float | None]:
    """``"add"`` -> ("add", None); ``"add@1.0"`` -> ("add", 1.0): a join and, optionally, the init std
    of its learnable PE (default: the model's ``pe_init_std``, 0.2). Raises ValueError naming the bad part."""
    join, sep, std_text = str(spec).partition("@")
    if join not in JOINS:
        raise ValueError(f"unknown join {join!r} in {spec!r}; choose from {JOINS}, optionally as JOIN@STD (e.g. add@1.0)")
    if not sep:
        return join, None
    try:
        std = float(std_text)
    except ValueError:
        std = float("nan")
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"{spec!r}: the PE init std after '@' must be a positive number, e.g. {join}@1.0; got {std_text!r}")
    return join, std


def arm_name(seed: int, pe: str, join: str) -> str:
    """An arm's name, e.g. ``learnable-add-s0`` or ``learnable-add@1.0-s0`` (``join`` as specified)."""
    return f"{pe}-{join}-s{seed}"




def num_classes_of(cfg: TrainConfig) -> int:
    """The classes ``cfg``'s dataset has, without reading it (10 for an ImageFolder tree, whose count
    only the files tell: it changes only the head's size)."""
    return {**{name: classes for name, (classes, _, _) in EXPECTED_COUNTS.items()}, "toy": len(QUADRANTS)}.get(cfg.dataset, 10)


def load_data(cfg: TrainConfig) -> ImageDataset:
    """The images ``cfg`` names: held in memory, or streamed from disk (``stream``)."""
    if cfg.stream:
        return open_imagefolder(cfg.data_root, cfg.img_size, crop_scale=cfg.augment.crop_scale,  # type: ignore[arg-type]
                                n_train=cfg.n_train, n_test=cfg.n_test, workers=cfg.workers)
    if cfg.dataset == "toy":
        return make_position_toy(cfg.n_train or TOY_SIZES[0], cfg.n_test or TOY_SIZES[1], img_size=cfg.img_size, seed=0)
    if cfg.dataset == "imagefolder":
        return load_imagefolder(cfg.data_root, cfg.img_size, n_train=cfg.n_train, n_test=cfg.n_test)  # type: ignore[arg-type]
    return load_cifar(cfg.dataset, cfg.data_root, download=cfg.download, n_train=cfg.n_train, n_test=cfg.n_test, seed=0)


def build_model(cfg: TrainConfig, pe: str, join: str, num_classes: int) -> nn.Module:
    """A lape_lib model by name, or ``timm/<name>``: timm's own model for ``join="add"``, lapeified for ``"lape"``."""
    if cfg.model.startswith(TIMM_PREFIX):
        import timm

        from .timm_lape import lapeify

        vit = timm.create_model(cfg.model[len(TIMM_PREFIX):], pretrained=False, num_classes=num_classes,
                                img_size=cfg.img_size, **cfg.model_overrides)
        return lapeify(vit) if join == "lape" else vit
    join, std = parse_join(join)
    overrides = cfg.model_overrides if std is None else {**cfg.model_overrides, "pe_init_std": std}
    return create_model(cfg.model, num_classes=num_classes, img_size=cfg.img_size, pe=pe, join=join, **overrides)


def initial_model(cfg: TrainConfig, seed: int, pe: str, join: str, num_classes: int) -> nn.Module:
    """An arm's model as the trainer starts it: ``build_model`` after seeding with the arm's seed, so
    an analysis can rebuild any arm at step 0, and the joins of one seed start from the same weights
    for the modules they share (except ``per_layer_pe``, whose extra PEs draw first, and a JOIN@STD
    arm's PE, drawn at its own std)."""
    torch.manual_seed(seed)
    return build_model(cfg, pe, join, num_classes)


def arm_label(arm: Mapping[str, Any]) -> str:
    """An arm's label within its run, read from a results file: its join as specified (``add``, ``add@1.0``, ``lape``...)."""
    return str(arm.get("arm", arm["join"]))  # results from before JOIN@STD have only "join"
