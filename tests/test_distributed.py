"""torchrun: two processes on the CPU (gloo) shard training and evaluation, and end with one model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_stream import SMALL, make_tree

from lape_lib.augment import BatchAugment
from lape_lib.checkpoint import load_checkpoint
from lape_lib.config import TrainConfig, load_data
from lape_lib.models import create_model
from lape_lib.train import evaluate


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
    alone = evaluate(model, data.eval_batches(0, 1, torch.device("cpu")), BatchAugment(cfg.augment, data.mean, data.std, 2),
                     torch.float32, torch.device("cpu"))
    final = results["arms"]["learnable-lape-s0"]["final"]
    assert final["test_acc"] == pytest.approx(alone["test_acc"])
    assert final["test_loss"] == pytest.approx(alone["test_loss"], rel=1e-5)
