"""ImageFolder data and timm models in the trainer (torchrun itself: test_stream.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lape_lib.data import DataError, load_imagefolder
from lape_lib.train import TrainConfig, train


def make_tree(root: Path, per_class: int = 8, size: int = 20) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", per_class // 2)):
        for c in ("cat", "dog"):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return root


def test_imagefolder_resizes_and_labels(tmp_path: Path) -> None:
    data = load_imagefolder(make_tree(tmp_path), img_size=16)
    assert data.train_x.shape == (16, 3, 16, 16) and data.test_x.shape == (8, 3, 16, 16)
    assert data.classes == ("cat", "dog") and data.train_y.tolist() == [0] * 8 + [1] * 8
    with pytest.raises(DataError, match="not an ImageFolder tree"):
        load_imagefolder(tmp_path / "train", img_size=16)


def test_timm_model_in_the_trainer() -> None:
    from lape_lib.augment import AugmentConfig

    res = train(TrainConfig(
        model="timm/deit_tiny_patch16_224", model_overrides={"patch_size": 8, "depth": 1}, joins=("add", "lape"),
        dataset="toy", n_train=32, n_test=16, epochs=1, warmup_epochs=0, cooldown_epochs=0, batch_size=16,
        augment=AugmentConfig.off(), device="cpu", progress=False,
    ))
    assert set(res["arms"]) == {"learnable-add-s0", "learnable-lape-s0"}
    dim, depth = 192, 1
    assert res["arms"]["learnable-lape-s0"]["params"] - res["arms"]["learnable-add-s0"]["params"] == 2 * dim * depth
    with pytest.raises(ValueError, match="pe 'learnable' only"):
        TrainConfig(model="timm/deit_tiny_patch16_224", pes=("sin2d",))
    with pytest.raises(ValueError, match="unknown timm model"):
        TrainConfig(model="timm/deit_gigantic")


def test_deit_recipe_from_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import lape_lib.train as T

    seen: list = []
    monkeypatch.setattr(T, "train", lambda cfg, **kw: seen.append(cfg) or {"arms": {}})
    T.main(["--recipe", "deit", "--data-root", "/tmp/x", "--batch-size", "256", "--joins", "lape"])
    cfg = seen[-1]
    assert cfg.model == "timm/deit_tiny_patch16_224" and cfg.img_size == 224 and cfg.joins == ("lape",)
    assert cfg.lr == pytest.approx(5e-4 * 256 / 512) and cfg.weight_decay == 0.05 and cfg.augment.crop_scale == (0.08, 1.0) and cfg.stream
    T.main(["--dataset", "toy", "--no-augment", "--epochs", "20"])
    assert seen[-1].lr == 5.5e-4 and seen[-1].epochs == 20  # the CIFAR recipe stays the default
