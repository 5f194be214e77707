"""How fast a run's step goes on this machine, and how long the whole run would take.

    estimate_minutes(TrainConfig(epochs=30, seeds=(0, 1, 2)))  # printed by notebooks 02 and 04 before they train

Figures for choosing parameters and for the benchmarks (``benchmarks/``), never timed tests: the
step timed is the run's own (``time_step`` builds it as ``train`` does: arms, precision, compile
mode, stacking, graphs), on synthetic images already on the device.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from .augment import AugmentConfig, BatchAugment
from .config import TOY_SIZES, TrainConfig, num_classes_of
from .images import EXPECTED_COUNTS
from .train import check_cuda_graph, synchronize, augment_seeds, build_arms, resolve_device, resolve_precision, train_step


def time_step(cfg: TrainConfig, *, steps: int = 20, warmup: int = 3, num_classes: int = 10) -> dict[str, Any]:
    """Training images/s of the step ``cfg``'s run takes: its arms (seeds x pes x joins), batch,
    precision, augmentation, ``compile``/``compile_mode``, ``stack_seeds`` and ``cuda_graph``, on
    synthetic uint8 data already on the device (so a streamed loader's decoding is not included).

    A figure for choosing parameters, ``estimate_minutes`` and the benchmarks; not a test.
    """
    dev = resolve_device(cfg.device)
    dtype = resolve_precision(cfg.precision, dev)
    check_cuda_graph(cfg, dev, dtype)
    arms = build_arms(cfg, num_classes, dev, dtype)
    seeds = sorted({a.seed for a in arms})
    aug = BatchAugment(cfg.augment, (0.5,) * 3, (0.25,) * 3, num_classes, compile=cfg.compile)
    g = torch.Generator().manual_seed(0)
    b, size = cfg.batch_size, cfg.img_size
    x_all = torch.randint(0, 256, (b * 4, 3, size, size), generator=g, dtype=torch.uint8).to(dev)
    y_all = torch.randint(0, num_classes, (b * 4,), generator=g).to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses: list[dict[str, torch.Tensor]] = []  # read after the timing: no host sync inside it

    def run(n: int, first: int) -> None:
        for i in range(first, first + n):
            sl = slice((i % 4) * b, (i % 4 + 1) * b)
            step_losses = train_step(arms, augment_seeds(aug, {s: (x_all[sl], y_all[sl]) for s in seeds}, 0, i, dev), 0, i)
            losses.append(step_losses)

    run(warmup, 0)
    synchronize(dev)
    t0 = time.perf_counter()
    run(steps, warmup)
    synchronize(dev)
    seconds = time.perf_counter() - t0
    return {
        "model": cfg.model, "img_size": size, "batch_size": b, "n_models": len(arms), "device": str(dev), "precision": str(dtype),
        "compile": cfg.compile, "compile_mode": cfg.compile_mode, "stack_seeds": cfg.stack_seeds, "cuda_graph": cfg.cuda_graph,
        "images_per_s": steps * b * len(arms) / seconds,
        "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if dev.type == "cuda" else None,
        "losses": [{k: float(v) for k, v in row.items()} for row in losses],  # every step's, warm-up included
    }


def measure_throughput(
    model: str = "vit_lite_7_4", *, batch_size: int = 128, steps: int = 20, warmup: int = 3, device: str = "auto",
    precision: str = "auto", compile_model: bool = False, compile_mode: str | None = None,
    augment: AugmentConfig | None = None, n_models: int = 1, model_overrides: dict[str, Any] | None = None,
    img_size: int = 32, num_classes: int = 10, stack_seeds: bool = False, cuda_graph: bool = False,
) -> dict[str, Any]:
    """``time_step`` of ``n_models`` seeds of one LaPE model under the recipe's augmentation
    (or ``augment``), by keywords: the benchmarks' and notebook 00's form."""
    cfg = TrainConfig(model=model, joins=("lape",), seeds=tuple(range(n_models)), model_overrides=model_overrides or {},
                      augment=augment or AugmentConfig(), compile=compile_model, compile_mode=compile_mode,
                      device=str(resolve_device(device)), precision=precision, progress=False, img_size=img_size,
                      stack_seeds=stack_seeds, cuda_graph=cuda_graph, batch_size=batch_size)
    return time_step(cfg, steps=steps, warmup=warmup, num_classes=num_classes)


def estimate_minutes(cfg: TrainConfig, steps: int = 3) -> dict[str, Any]:
    """Time a few training steps of ``cfg``'s run on this device and project the whole run.

    The steps timed are the run's own (``time_step``: the same arms, precision, compile mode,
    stacking and graphs). Returns the measured images/s (all models together), the projected
    minutes of training (evaluation, data loading and compilation not included) and the numbers
    behind them. A figure to decide with, printed by notebooks 02 and 04 before they train; the
    real run may differ by tens of %.
    """
    full = {name: classes * per_class for name, (classes, per_class, _) in EXPECTED_COUNTS.items()}
    n_train = cfg.n_train or {**full, "toy": TOY_SIZES[0]}.get(cfg.dataset, 0)
    if not n_train:
        raise ValueError(f"estimate_minutes needs n_train for dataset {cfg.dataset!r}")
    # A compiled or graphed step settles over its first calls (recompiles, graph warm-up): not timed.
    warmup = 3 if cfg.compile or cfg.cuda_graph else 1
    speed = time_step(replace(cfg, out_dir=None, progress=False), steps=steps, warmup=warmup, num_classes=num_classes_of(cfg))
    arms = speed["n_models"]
    images = (n_train // cfg.batch_size) * cfg.batch_size * cfg.total_epochs * arms
    return {"images_per_s": speed["images_per_s"], "models": arms, "epochs": cfg.total_epochs, "device": speed["device"],
            "precision": speed["precision"], "minutes": images / speed["images_per_s"] / 60}
