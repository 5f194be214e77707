"""ImageFolder trees streamed from disk: transforms, determinism, bad files, the trainer, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_distributed import make_tree

from lape_lib.augment import AugmentConfig, BatchAugment
from lape_lib.checkpoint import load_checkpoint
from lape_lib.data import DataError
from lape_lib.models import create_model
from lape_lib.stream import open_imagefolder
from lape_lib.train import TrainConfig, eval_batches, evaluate, load_data, train

SMALL = {"depth": 1, "dim": 32, "num_heads": 2}


def test_items_are_cropped_uint8_squares_with_labels(tmp_path: Path) -> None:
    data = open_imagefolder(make_tree(tmp_path, size=40), img_size=16, workers=0)
    assert (data.n_train, data.n_test, data.classes) == (16, 8, ("cat", "dog"))
    x, y = data.train[(3, 0, 0)]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16) and y == 0
    x_eval, _ = data.test[0]
    assert x_eval.shape == (3, 16, 16) and torch.equal(x_eval, data.test[0][0])  # the eval transform is fixed
    assert data.source.startswith("imagefolder-stream:")


def test_crops_follow_seed_epoch_and_index_not_the_workers(tmp_path: Path) -> None:
    data = open_imagefolder(make_tree(tmp_path, size=40), img_size=16, crop_scale=(0.1, 0.3), workers=0)
    assert torch.equal(data.train[(5, 0, 1)][0], data.train[(5, 0, 1)][0])
    assert not torch.equal(data.train[(5, 0, 1)][0], data.train[(5, 0, 2)][0])
    rng_before = torch.get_rng_state()
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    in_process = list(data.train_batches(0, 1, order, 8, rank=0, world=1))
    assert torch.equal(rng_before, torch.get_rng_state())  # the trainer's RNG is left alone
    data.workers = 2
    in_workers = list(data.train_batches(0, 1, order, 8, rank=0, world=1))
    assert len(in_process) == 2
    for (a, ya), (b, yb) in zip(in_process, in_workers):
        assert torch.equal(a, b) and torch.equal(ya, yb)
    # two processes split each global batch: rank r takes every second sample
    halves = [next(iter(data.train_batches(0, 1, order, 8, rank=r, world=2))) for r in (0, 1)]
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


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True], ids=["in-memory", "streamed"])
def test_torchrun_shards_training_and_evaluation(tmp_path: Path, stream: bool) -> None:
    tree = make_tree(tmp_path / "data", per_class=10, size=20)  # 10 val images: the ranks take 5 each
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "lape_lib.train",
        "--model", "vit_lite_7_4", "--override", "depth=1", "dim=32", "num_heads=2", "--joins", "lape",
        "--dataset", "imagefolder", "--data-root", str(tree), "--img-size", "16", "--batch-size", "8", "--epochs", "2",
        "--warmup-epochs", "1", "--cooldown-epochs", "0", "--device", "cpu", "--no-progress", "--out", str(out),
    ] + (["--stream", "--workers", "1"] if stream else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "weights-rank0.sha256").read_text() == (out / "weights-rank1.sha256").read_text()
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and results["done"] and len(results["arms"]["learnable-lape-s0"]["history"]) == 2
    cfg = TrainConfig(**results["config"])
    # The sharded evaluation, summed over both ranks, equals one process evaluating the whole split.
    model = create_model("vit_lite_7_4", num_classes=2, img_size=16, join="lape", **SMALL)
    model.load_state_dict(load_checkpoint(out / "checkpoint.pt", None, torch.device("cpu"))["arms"]["learnable-lape-s0"]["model"])
    data = load_data(cfg)
    alone = evaluate(model, eval_batches(data, 0, 1, torch.device("cpu")), BatchAugment(cfg.augment, data.mean, data.std, 2),
                     torch.float32, torch.device("cpu"))
    final = results["arms"]["learnable-lape-s0"]["final"]
    assert final["test_acc"] == pytest.approx(alone["test_acc"])
    assert final["test_loss"] == pytest.approx(alone["test_loss"], rel=1e-5)
