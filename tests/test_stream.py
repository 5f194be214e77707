"""ImageFolder trees streamed from disk: transforms, determinism, bad files, the trainer (torchrun: test_distributed.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lape_lib.augment import AugmentConfig
from lape_lib.data import DataError
from lape_lib.stream import open_imagefolder
from lape_lib.config import TrainConfig
from lape_lib.train import train

SMALL = {"depth": 1, "dim": 32, "num_heads": 2}


def make_tree(root: Path, per_class: int = 8, size: int = 20) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", per_class // 2)):
        for c in ("cat", "dog"):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return root


def test_items_are_cropped_uint8_squares_with_labels(tmp_path: Path) -> None:
    data = open_imagefolder(make_tree(tmp_path, size=40), img_size=16, workers=0)
    assert (data.n_train, data.n_test, data.classes) == (16, 8, ("cat", "dog"))
    x, y = data.train[(3, 0, 0)]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16) and y == 0
    x_eval, _ = data.test[0]
    assert x_eval.shape == (3, 16, 16) and torch.equal(x_eval, data.test[0][0])  # the eval transform is fixed
    assert data.source.startswith("imagefolder-stream:")
    from torchvision.transforms import InterpolationMode

    resizes = [data.train.transform, data.test.transform.transforms[0]]  # DeiT resizes bicubic, train and eval
    assert [t.interpolation for t in resizes] == [InterpolationMode.BICUBIC] * 2


def test_crops_follow_seed_epoch_and_index_not_the_workers(tmp_path: Path) -> None:
    data = open_imagefolder(make_tree(tmp_path, size=40), img_size=16, crop_scale=(0.1, 0.3), workers=0)
    assert torch.equal(data.train[(5, 0, 1)][0], data.train[(5, 0, 1)][0])
    assert not torch.equal(data.train[(5, 0, 1)][0], data.train[(5, 0, 2)][0])
    rng_before = torch.get_rng_state()
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    in_process = list(data.seed_batches(0, 1, order, 8, rank=0, world=1))
    assert torch.equal(rng_before, torch.get_rng_state())  # the trainer's RNG is left alone
    data.workers = 2
    in_workers = list(data.seed_batches(0, 1, order, 8, rank=0, world=1))
    assert len(in_process) == 2
    for (a, ya), (b, yb) in zip(in_process, in_workers):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    # two processes split each global batch: rank r takes every second sample
    halves = [next(iter(data.seed_batches(0, 1, order, 8, rank=r, world=2))) for r in (0, 1)]
    assert sorted(halves[0][1].tolist() + halves[1][1].tolist()) == sorted(in_process[0][1].tolist())


def test_subsets_and_bad_trees(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "ok")
    data = open_imagefolder(tree, img_size=16, n_train=6, n_test=4, workers=0)
    assert data.n_train == 6 and data.train.labels.bincount().tolist() == [3, 3] and data.n_test == 4
    with pytest.raises(DataError, match="not an ImageFolder tree"):
        open_imagefolder(tree / "train", img_size=16)
    (tmp_path / "empty" / "train" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        open_imagefolder(tmp_path / "empty", img_size=16)
    (tree / "train" / "cat" / "0.jpg").write_bytes(b"not a jpeg")
    broken = open_imagefolder(tree, img_size=16, workers=0)
    with pytest.raises(DataError, match=r"cannot decode image .*0\.jpg"):
        broken.train[(0, 0, 0)]


def _stream_config(tree: Path, **kw) -> TrainConfig:
    base = dict(model="vit_lite_7_4", model_overrides=SMALL, dataset="imagefolder", data_root=str(tree), stream=True,
                workers=0, img_size=16, epochs=2, warmup_epochs=1, cooldown_epochs=0, batch_size=8, device="cpu",
                progress=False, augment=AugmentConfig(crop_scale=(0.5, 1.0), randaug_ops=0))
    return TrainConfig(**{**base, **kw})


def test_trainer_streams_and_resumes_exactly(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "data", size=24)
    straight = train(_stream_config(tree, out_dir=str(tmp_path / "a")))
    assert straight["done"] and straight["data_source"].startswith("imagefolder-stream:")
    train(_stream_config(tree, out_dir=str(tmp_path / "b")), stop_after_epochs=1)
    resumed = train(_stream_config(tree, out_dir=str(tmp_path / "b"), workers=2))  # workers may change on resume
    for name, model in straight["models"].items():
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, resumed["models"][name].state_dict()[key], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="stream=True reads an ImageFolder tree"):
        TrainConfig(dataset="cifar10", stream=True)
