"""The trainer: CIFAR, the toy set or an ImageFolder tree (held on the device, or streamed from
disk), several models on the same batches.

    python -m lape_lib.train --model vit_lite_7_4 --joins add lape --seeds 0 1 2 --epochs 300 --out runs/c10

One run trains every (seed, pe, join) combination. A join may carry the learnable PE's init
std, ``add@1.0``: the scale-matched control arm beside the default ``add`` (std 0.2).
Models that share a seed see identical
batches and augmentations (drawn from seed, epoch and step alone), so add-vs-LaPE is a paired
comparison; several small models in one process are meant to keep a large GPU busy (not yet
measured on a GPU). A checkpoint is
written atomically after every epoch and a killed run resumes from it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .augment import AugmentConfig, BatchAugment, derive_seed
from .checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint, save_weights
from .config import (DATASET_CHOICES, PRECISIONS, RECIPES, RESULTS_SCHEMA, TrainConfig, arm_name, initial_model, load_data,
                     parse_join)
from .files import lock_run_folder, tensors_sha256, write_json
from .graphs import GraphedStep, load_optimizer_state, portable_optimizer_state, set_lr
from .images import Batch, DataError, ImageDataset
from .models import JOINS, VisionTransformer, describe, list_models
from .notebook import env_flag
from .pos_embed import PE_TYPES
from .stack import SeedStack, adamw, split_weight_decay

CHECKPOINT = "checkpoint.pt"  # in the run's output folder, rewritten atomically after every epoch
RESUMED_FINISHED = "nothing left to train in this call"  # printed when a call finds its run already finished
NO_PROGRESS_ENV = "LAPE_NO_PROGRESS"  # set (lape_lib.workbook does): no progress bar, which papermill would save frozen


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    """timm's per-epoch cosine schedule: linear warmup from ``warmup_lr``, cosine to ``min_lr``
    over ``epochs``, then ``min_lr`` for the cooldown epochs."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr + epoch * (cfg.lr - cfg.warmup_lr) / cfg.warmup_epochs
    if epoch >= cfg.epochs:
        return cfg.min_lr
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * epoch / cfg.epochs))


def batch_generator(seed: int, epoch: int, step: int, device: torch.device, rank: int | None = None) -> torch.Generator:
    """The generator for one batch's augmentation: a pure function of (seed, epoch, step[, rank])."""
    parts = (seed, epoch, step) if rank is None else (seed, epoch, step, rank)
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))


def seed_noise(seeds: Iterable[int], epoch: int, step: int, rank: int | None = None) -> None:
    """Seed dropout and stochastic depth for one step of the model(s) of ``seeds`` (several: a SeedStack).

    The trainer calls it before each arm's step, so an arm's noise is a pure function of (seed,
    epoch, step[, rank]): it does not depend on which other arms share the run, a resumed run
    needs no RNG state, and the joins of one seed, whose layers draw in the same order and
    shapes, get the same dropout masks too (a tighter pairing than the batches alone).
    """
    parts = (*seeds, epoch, step) if rank is None else (*seeds, epoch, step, rank)
    torch.manual_seed(derive_seed("noise", *parts))  # host-side: no device sync


def augment_seeds(aug: BatchAugment, batch: Batch, epoch: int, step: int,
                  device: torch.device, rank: int | None = None, mix: bool = True) -> Batch:
    """Every seed's (uint8 images, labels) -> (augmented images, soft targets), in one pass for all seeds."""
    xs, targets = aug.many([(x, y, batch_generator(seed, epoch, step, device, rank)) for seed, (x, y) in batch.items()], mix)
    return {seed: (xs[i], targets[i]) for i, seed in enumerate(batch)}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available; use device='cpu' or 'auto'")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether a CUDA device computes bf16 in hardware: compute capability 8.0 or later (A100, L4, H100).

    ``torch.cuda.is_bf16_supported()`` also says yes on older GPUs such as Colab's T4 (7.5),
    where bf16 is only emulated and runs far slower than fp16, so "auto" asks this instead.
    """
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype: "auto" is bf16 on GPUs with native bf16, fp16 (with a gradient scaler) on
    older ones (T4, V100), fp32 on CPU."""
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if native_bf16(device) else torch.float16
    if name in ("bf16", "fp16") and device.type != "cuda":
        return torch.bfloat16 if name == "bf16" else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """One model's AdamW groups: see :func:`lape_lib.stack.split_weight_decay` for what skips weight decay."""
    return split_weight_decay(model.named_parameters(), weight_decay)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.sum(-targets * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class NonFiniteLossError(RuntimeError):
    """A model's loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Arm:
    """One model being trained, with its optimizer and history."""

    name: str
    seed: int
    pe: str
    join: str  # as specified: a join, or JOIN@STD
    model: nn.Module
    optimizer: torch.optim.Optimizer  # shared by the arms of one SeedStack
    scaler: torch.amp.GradScaler
    step_fn: Any  # None for stacked arms: their SeedStack steps them
    history: list[dict[str, float]] = field(default_factory=list)
    stack: SeedStack | None = None


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], aug: BatchAugment,
             dtype: torch.dtype, device: torch.device, world: int = 1) -> dict[str, float]:
    """Top-1 accuracy (%) and mean cross-entropy over ``batches``, summed over all processes."""
    model.eval()
    sums = torch.zeros(3, device=device, dtype=torch.float64)  # correct, loss, count
    for x, y in batches:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(aug.normalize(x))
        sums[0] += (logits.argmax(-1) == y).sum()
        sums[1] += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        sums[2] += len(y)
    model.train()
    if world > 1:
        torch.distributed.all_reduce(sums)
    correct, loss, n = sums.tolist()
    return {"test_acc": 100 * correct / n, "test_loss": loss / n}


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a host clock read after it times the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _distributed(model: nn.Module, device: torch.device) -> nn.Module:
    """The model wrapped in DistributedDataParallel when this process is one of several."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _make_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, dtype: torch.dtype,
               compile_model: bool, compile_mode: str | None = None, graphed: bool = False):
    forward = torch.compile(model, mode=compile_mode) if compile_model else model
    device_type = next(model.parameters()).device.type

    def step(x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # A captured step must not keep autocast's cache of cast weights (PyTorch's CUDA-graph rule).
        with torch.autocast(device_type, dtype=dtype, enabled=dtype != torch.float32, cache_enabled=not graphed):
            loss = soft_cross_entropy(forward(x), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    return step


def check_cuda_graph(cfg: TrainConfig, device: torch.device, dtype: torch.dtype, world: int = 1) -> None:
    """Refuse, before any data is read, a ``cuda_graph`` run that cannot be captured."""
    if not cfg.cuda_graph:
        return
    if device.type != "cuda":
        raise ValueError(f"cuda_graph needs a CUDA device; this run is on {device}")
    if dtype == torch.float16:
        raise ValueError("cuda_graph cannot capture fp16's gradient scaler (it syncs with the host); "
                         "use precision 'fp32' ('bf16' on a GPU that has it natively: not a T4)")
    if world > 1:
        raise ValueError("cuda_graph is for one process; under torchrun train without it")


def _state_tensors(model: nn.Module) -> Callable[[], list[torch.Tensor]]:
    """What a CUDA graph of ``model``'s step reads and writes in place: its parameters and buffers."""
    return lambda: [*model.parameters(), *model.buffers()]


def _stack_tensors(stack: SeedStack) -> Callable[[], list[torch.Tensor]]:
    """The same for a SeedStack: its stacked parameters and buffers."""
    return lambda: [*stack.params.values(), *stack.buffers.values()]


def build_arms(cfg: TrainConfig, num_classes: int, device: torch.device, dtype: torch.dtype, world: int = 1) -> list[Arm]:
    arms = []
    for seed, pe, join in cfg.arms():
        model = initial_model(cfg, seed, pe, join, num_classes).to(device)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        if cfg.stack_seeds:  # optimizer and step come from the SeedStack below
            arms.append(Arm(arm_name(seed, pe, join), seed, pe, join, model, None, scaler, None))  # type: ignore[arg-type]
            continue
        optimizer = adamw(param_groups(model, cfg.weight_decay), cfg.lr, capturable=cfg.cuda_graph)
        trained = _distributed(model, device)
        step = _make_step(trained, optimizer, scaler, dtype, cfg.compile, cfg.compile_mode, graphed=cfg.cuda_graph)
        if cfg.cuda_graph:
            step = GraphedStep(step, _state_tensors(model), optimizer)
        arms.append(Arm(arm_name(seed, pe, join), seed, pe, join, model, optimizer, scaler, step))
    if cfg.stack_seeds:
        if world > 1:
            raise ValueError("stack_seeds trains its models in one process; under torchrun train the seeds unstacked")
        for pe, join in dict.fromkeys((a.pe, a.join) for a in arms):
            members = [a for a in arms if (a.pe, a.join) == (pe, join)]
            stack = SeedStack([a.model for a in members], soft_cross_entropy, lr=cfg.lr, weight_decay=cfg.weight_decay,
                              dtype=dtype, compile_model=cfg.compile, compile_mode=cfg.compile_mode, capturable=cfg.cuda_graph)
            if cfg.cuda_graph:
                stack.step = GraphedStep(stack.step, _stack_tensors(stack), stack.optimizer)  # type: ignore[method-assign,assignment]
            for a in members:
                a.stack, a.optimizer = stack, stack.optimizer
    return arms


def train_step(arms: list[Arm], inputs: Batch, epoch: int = 0, step: int = 0,
               rank: int | None = None) -> dict[str, torch.Tensor]:
    """One optimizer step of every arm on its seed's (augmented images, soft targets); returns each arm's loss.

    (epoch, step, rank) seed each arm's dropout: see :func:`seed_noise`.
    """
    losses: dict[str, torch.Tensor] = {}
    for arm in arms:
        if arm.stack is None:
            seed_noise((arm.seed,), epoch, step, rank)
            losses[arm.name] = arm.step_fn(*inputs[arm.seed])
        elif arm.name not in losses:
            members = [a for a in arms if a.stack is arm.stack]
            seed_noise([a.seed for a in members], epoch, step, rank)
            xs = torch.stack([inputs[a.seed][0] for a in members])
            targets = torch.stack([inputs[a.seed][1] for a in members])
            losses.update(zip([a.name for a in members], arm.stack.step(xs, targets)))
    return losses


def environment() -> dict[str, Any]:
    import torchvision

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "lape_lib": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
        "python": platform.python_version(), "gpu": gpu, "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def train(cfg: TrainConfig, *, resume: bool = True, stop_after_epochs: int | None = None,
          time_limit_s: float | None = None, checkpoint_every: int = 1) -> dict[str, Any]:
    """Train every arm of ``cfg``; returns the results dict (also written to ``out_dir``).

    ``stop_after_epochs`` ends this call after that many epochs; ``time_limit_s`` ends it after
    the last epoch that fits in that many seconds (judged from the epochs so far, so a Colab
    session or a 10-minute job ends on a checkpoint). Run it again to resume.
    ``checkpoint_every``: write the checkpoint after every N-th epoch; 0 writes one only when
    the call ends before the run is done (a job whose machine is gone after it, such as a lent
    GPU's, saves the seconds a large checkpoint costs per epoch; a kill then loses the run).
    ``results.json`` is rewritten after every epoch either way.
    """
    if stop_after_epochs is not None and stop_after_epochs < 1:
        raise ValueError(f"stop_after_epochs must be at least 1 (or None: run to the end); got {stop_after_epochs}")
    if time_limit_s is not None and not time_limit_s > 0:
        raise ValueError(f"the time limit must be a positive number of seconds (or None: no limit); got {time_limit_s}")
    if not (isinstance(checkpoint_every, int) and checkpoint_every >= 0):
        raise ValueError(f"checkpoint_every must be an integer >= 0 (0: only when a call ends early); got {checkpoint_every!r}")
    rank, world, owned = init_distributed(cfg.device)
    lock = lock_run_folder(Path(cfg.out_dir)) if cfg.out_dir is not None and rank == 0 else None
    try:
        return _train(cfg, resume, stop_after_epochs, rank, world, time_limit_s, checkpoint_every)
    finally:
        if lock is not None:
            lock.unlink(missing_ok=True)
        if owned:
            torch.distributed.destroy_process_group()


def init_distributed(device_name: str) -> tuple[int, int, bool]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL on GPUs, gloo on CPUs.

    Returns (rank, world size, whether this call created the group).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, False
    dist = torch.distributed
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank(), world, True


def _out_of_time(started: float, loop_started: float, epochs_done: int, limit_s: float | None, device: torch.device,
                 world: int) -> bool:
    """Whether another epoch, as long as the mean one so far, would end more than ``limit_s``
    after ``started`` (the call's start: loading data and compiling count too)."""
    if limit_s is None:
        return False
    now = time.perf_counter()
    stop = torch.tensor(float(now - started + (now - loop_started) / epochs_done > limit_s), device=device)
    if world > 1:  # every process stops after the same epoch
        torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
    return bool(stop)


def _train(cfg: TrainConfig, resume: bool, stop_after_epochs: int | None, rank: int, world: int,
           time_limit_s: float | None = None, checkpoint_every: int = 1) -> dict[str, Any]:
    started = time.perf_counter()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    dtype = resolve_precision(cfg.precision, device)
    check_cuda_graph(cfg, device, dtype, world)
    data = load_data(cfg)
    # What the images are (content, not path): part of the run's identity, so a checkpoint made on
    # other data is refused and the report never pools runs on different data.
    identity = data.identity()
    data = data.to(device)
    fingerprint = {**cfg.fingerprint(), "data": identity}
    if data.n_train < cfg.batch_size:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the training set ({data.n_train})")
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} (the global batch) must be divisible by the {world} processes")
    lead = rank == 0  # only the first process writes files and shows progress
    shard = rank if world > 1 else None  # a process's batches and noise are seeded by its rank too
    # Streamed images arrive already cropped by the loader's workers; the rest happens here on the device.
    aug = BatchAugment(replace(cfg.augment, crop_scale=None) if cfg.stream else cfg.augment, data.mean, data.std,
                       data.num_classes, compile=cfg.compile)
    arms = build_arms(cfg, data.num_classes, device, dtype, world)
    out = Path(cfg.out_dir) if cfg.out_dir else None
    start_epoch, wall = 0, 0.0
    ckpt_path = out / CHECKPOINT if out else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        # A checkpoint from before the data was recorded resumes on whatever data this call reads.
        state = load_checkpoint(ckpt_path, fingerprint, device, defaults={**TrainConfig().fingerprint(), "data": identity})
        start_epoch, wall = _restore(state, arms, ckpt_path)
        sources = [s for s in state.get("data_sources", []) if s != data.source]
    else:
        sources = []
    sources.append(data.source)  # every copy this run has read, across resumes (same content, maybe other paths)
    seen = {"identity": identity, "sources": sources}
    steps = data.n_train // cfg.batch_size  # drop_last, as the recipe's loader does
    end_epoch = cfg.total_epochs if stop_after_epochs is None else min(cfg.total_epochs, start_epoch + stop_after_epochs)
    quiet = env_flag(NO_PROGRESS_ENV)
    if lead and start_epoch > 0:  # say so: a notebook's wall time and estimate would otherwise read as this call's
        done = RESUMED_FINISHED if start_epoch >= end_epoch else f"continuing at epoch {start_epoch + 1}"
        print(f"resumed {ckpt_path} after epoch {start_epoch} of {cfg.total_epochs} ({wall:.0f} s of training so far): {done}",
              flush=True)
    bar = tqdm(total=(end_epoch - start_epoch) * steps, desc=f"{cfg.model} x{len(arms)}", disable=not (cfg.progress and lead) or quiet,
               unit="step")
    seeds = sorted({arm.seed for arm in arms})
    loop_started = time.perf_counter()
    for epoch in range(start_epoch, end_epoch):
        lr = lr_at(epoch, cfg)
        for arm in arms:
            set_lr(arm.optimizer, lr)
        mix = cfg.mix_off_epoch is None or epoch < cfg.mix_off_epoch
        losses = {arm.name: torch.zeros((), device=device) for arm in arms}
        synchronize(device)
        t0 = time.perf_counter()
        for step, batch in enumerate(data.train_batches(seeds, epoch, cfg.batch_size, rank, world, device)):
            inputs = augment_seeds(aug, batch, epoch, step, device, shard, mix)
            for name, loss in train_step(arms, inputs, epoch, step, shard).items():
                losses[name] += loss
            bar.update(1)
        synchronize(device)
        seconds = time.perf_counter() - t0
        wall += seconds
        if world > 1:  # report the mean loss over all processes
            for loss in losses.values():
                torch.distributed.all_reduce(loss)
                loss /= world
        evaluate_now = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.total_epochs
        for arm in arms:
            train_loss = float(losses[arm.name]) / steps
            if not math.isfinite(train_loss):
                bar.close()
                kept = (f"the last good checkpoint ({ckpt_path}) is kept" if ckpt_path is not None and ckpt_path.exists()
                        else "no checkpoint had been written yet")
                fp32 = "" if dtype == torch.float32 else " or train in fp32 (precision='fp32'; --precision fp32)"
                raise NonFiniteLossError(
                    f"{arm.name}: training loss is {train_loss} at epoch {epoch}; {kept}. Lower the lr (now {lr:.2e}){fp32}."
                )
            row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "images_per_s": steps * cfg.batch_size * len(arms) / seconds}
            if evaluate_now:
                row.update(evaluate(arm.model, data.eval_batches(rank, world, device), aug, dtype, device, world))
            arm.history.append(row)
        bar.set_postfix({a.name: f"{a.history[-1].get('test_acc', float('nan')):.1f}%" for a in arms[:4]})
        if quiet and cfg.progress and lead:  # no bar: one line per epoch instead, readable in a saved notebook too
            print(f"epoch {epoch + 1}/{cfg.total_epochs} ({seconds:.0f} s): " + ", ".join(
                f"{a.name} loss {a.history[-1]['train_loss']:.3f}" + (f" acc {a.history[-1]['test_acc']:.1f}%"
                                                                     if "test_acc" in a.history[-1] else "") for a in arms), flush=True)
        last = epoch + 1 == end_epoch or _out_of_time(started, loop_started, epoch + 1 - start_epoch, time_limit_s, device, world)
        if out is not None and lead:
            if (checkpoint_every and (epoch + 1) % checkpoint_every == 0) or (last and epoch + 1 < cfg.total_epochs):
                save_checkpoint(out / CHECKPOINT, {**_snapshot(arms, epoch + 1, wall), "data_sources": sources}, fingerprint)
            write_json(out / "results.json", _results(cfg, arms, wall, data, world, epoch + 1 == cfg.total_epochs, seen))
        if world > 1:
            torch.distributed.barrier()
        if last:
            end_epoch = epoch + 1
            break
    bar.close()
    results = _results(cfg, arms, wall, data, world, end_epoch == cfg.total_epochs, seen)
    if out is not None and lead:
        # Also when nothing was left to train: a run killed between its last checkpoint and its
        # last results.json is finished here instead of staying at done=false.
        write_json(out / "results.json", results)
        if cfg.save_weights and results["done"]:
            for arm in arms:
                if isinstance(arm.model, VisionTransformer):
                    save_weights(out / f"{arm.name}.safetensors", arm.model, describe(arm.model))
    if out is not None and world > 1:  # lets a caller check that every process ended with the same weights
        (out / f"weights-rank{rank}.sha256").write_text(tensors_sha256((k, v) for a in arms for k, v in a.model.state_dict().items()) + "\n")
    results["models"] = {arm.name: arm.model for arm in arms}  # in memory only, not in the JSON
    return results


def _snapshot(arms: list[Arm], next_epoch: int, wall: float) -> dict[str, Any]:
    """Everything a resumed run needs, as tensors and plain values (safe to load with weights_only)."""
    leaders = {id(a.optimizer): a.name for a in reversed(arms)}  # a shared (stacked) optimizer is saved once
    return {  # no RNG state: every draw is seeded from (seed, epoch, step)
        "epoch": next_epoch, "wall_s": wall,
        "arms": {
            a.name: {
                "model": a.model.state_dict(),
                "optimizer": portable_optimizer_state(a.optimizer) if leaders[id(a.optimizer)] == a.name else None,
                "scaler": a.scaler.state_dict(), "history": json.dumps(a.history),
            } for a in arms
        },
    }


def _restore(state: dict[str, Any], arms: list[Arm], path: Path) -> tuple[int, float]:
    """Load a ``_snapshot`` into the arms; returns (epoch to start from, wall time so far).
    A checkpoint that lacks what a snapshot holds is refused, naming what it lacks."""
    missing = [k for k in ("epoch", "wall_s", "arms") if k not in state]
    missing += [f"arms/{a.name}" for a in arms if isinstance(state.get("arms"), dict) and a.name not in state["arms"]]
    if missing:
        raise CheckpointMismatchError(f"{path} lacks {', '.join(missing)}: it is not a snapshot of this run. "
                                      "Delete it to start afresh, or use another output folder.")
    for arm in arms:
        saved = state["arms"][arm.name]
        arm.model.load_state_dict(saved["model"])  # stacked arms: copies into their views of the stack
        if saved["optimizer"] is not None:
            load_optimizer_state(arm.optimizer, saved["optimizer"])
        arm.scaler.load_state_dict(saved["scaler"])
        arm.history = json.loads(saved["history"])
    return int(state["epoch"]), float(state["wall_s"])


def _results(cfg: TrainConfig, arms: list[Arm], wall: float, data: ImageDataset, world: int,
             done: bool, seen: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": RESULTS_SCHEMA,
        "config": cfg.to_dict(),
        "command": " ".join(["python -m lape_lib.train"] + sys.argv[1:]) if sys.argv and sys.argv[0].endswith("train.py") else None,
        "data_source": data.source,
        "data_identity": seen["identity"],
        "data_sources": seen["sources"],
        "environment": environment(),
        "wall_s": wall,
        "world_size": world,
        "done": done,
        "arms": {
            a.name: {
                "seed": a.seed, "pe": a.pe, "join": parse_join(a.join)[0], "arm": a.join,
                "pe_init_std": a.model.cfg.pe_init_std if isinstance(a.model, VisionTransformer) and a.pe == "learnable" else None,
                "params": sum(p.numel() for p in a.model.parameters()),
                "final": {k: v for k, v in a.history[-1].items() if k in ("test_acc", "test_loss", "train_loss")} if a.history else {},
                "history": a.history,
            } for a in arms
        },
    }


def _parser() -> argparse.ArgumentParser:
    """Options left out of the command line stay unset, so the chosen recipe's defaults apply."""
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m lape_lib.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, argument_default=argparse.SUPPRESS)
    p.add_argument("--recipe", choices=RECIPES, default=None,
                   help="the defaults: Compact Transformers' CIFAR-10 recipe (shown below), its CIFAR-100 one "
                        "(lr 6e-4, warmup from 1e-6, mixing never off; the default for --dataset cifar100), or "
                        "DeiT's ImageNet recipe")
    p.add_argument("--model", help=f"one of {list_models()} or timm/<name> (default {d.model})")
    p.add_argument("--joins", nargs="+", metavar="JOIN[@STD]",
                   help=f"from {', '.join(JOINS)}; JOIN@STD sets that arm's learnable-PE init std, e.g. add@1.0 "
                        f"(default {' '.join(d.joins)})")
    p.add_argument("--pes", nargs="+", choices=PE_TYPES, help=f"default {' '.join(d.pes)}")
    p.add_argument("--seeds", nargs="+", type=int, help="default 0")
    p.add_argument("--dataset", choices=DATASET_CHOICES, help=f"default {d.dataset}")
    p.add_argument("--data-root", help="folder or archive; default: $LAPE_DATA alone if set, else ./data, the checkout's data/, "
                        "../shared/data beside the checkout")
    p.add_argument("--download", action="store_true", help="download CIFAR if no copy is found (the Hugging Face Hub, else torchvision from the original host)")
    p.add_argument("--stream", action="store_true",
                   help="imagefolder: decode and crop images in DataLoader workers instead of holding them in memory")
    p.add_argument("--workers", type=int, help=f"DataLoader workers with --stream (default {d.workers})")
    for name, kind in [("img_size", int), ("n_train", int), ("n_test", int), ("epochs", int), ("cooldown_epochs", int),
                       ("warmup_epochs", int), ("batch_size", int), ("eval_every", int), ("lr", float),
                       ("warmup_lr", float), ("min_lr", float), ("weight_decay", float)]:
        p.add_argument("--" + name.replace("_", "-"), type=kind, help=f"default {getattr(d, name)}")
    p.add_argument("--mix-off-epoch", type=int, help=f"-1: never (default {d.mix_off_epoch})")
    p.add_argument("--no-augment", action="store_true", help="switch every augmentation off")
    p.add_argument("--override", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="model config overrides, e.g. depth=2 (repeatable: --override depth=2 --override dim=64)")
    p.add_argument("--precision", choices=PRECISIONS, help="default auto")
    p.add_argument("--compile", action="store_true", help="torch.compile the models and the augmentation")
    p.add_argument("--compile-mode", help="torch.compile mode, e.g. reduce-overhead (CUDA graphs); avoid max-autotune")
    p.add_argument("--cuda-graph", action="store_true",
                   help="GPU: replay each model's whole step (forward, backward, AdamW) from one CUDA graph; not with --compile")
    p.add_argument("--stack-seeds", action="store_true",
                   help="train the seeds of each (pe, join) as one vmapped model: one kernel launch serves every seed")
    p.add_argument("--device", help="default auto")
    p.add_argument("--out", default=None, help="folder for checkpoint.pt and results.json (resumes if present)")
    p.add_argument("--save-weights", action="store_true", help="write fp16 safetensors of each lape_lib model at the end (not for timm/<name> models)")
    p.add_argument("--stop-after-epochs", type=int, default=None, help="end this call after N epochs (resume later)")
    p.add_argument("--time-limit-minutes", type=float, default=None,
                   help="end this call after the last epoch that fits in this time (resume later)")
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                   help="write the checkpoint every N epochs; 0: only when this call ends before the run is done (default 1)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep:
        raise SystemExit(f"--override expects KEY=VALUE, got {item!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = vars(_parser().parse_args(argv))
    names = {f.name for f in fields(TrainConfig)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items() if k in names}
    kwargs.update(out_dir=args["out"], progress=not args.get("no_progress", False))
    if args["override"]:
        kwargs["model_overrides"] = dict(_parse_override(o) for o in args["override"])
    if args.get("no_augment"):
        kwargs["augment"] = AugmentConfig.off()
    limit = args["time_limit_minutes"]
    if limit is not None and not limit > 0:
        raise SystemExit(f"error: --time-limit-minutes must be a positive number of minutes; got {limit:g}")
    try:
        cfg = TrainConfig.recipe(args["recipe"], **kwargs)
        results = train(cfg, stop_after_epochs=args["stop_after_epochs"], time_limit_s=None if limit is None else 60 * limit,
                        checkpoint_every=args["checkpoint_every"])
    except (ValueError, NonFiniteLossError, DataError) as err:  # CheckpointMismatchError is a ValueError
        raise SystemExit(f"error: {err}") from None
    except torch.cuda.OutOfMemoryError:
        raise SystemExit(
            f"error: out of GPU memory at batch size {cfg.batch_size} with {len(cfg.arms())} model(s); "
            "lower --batch-size or train fewer seeds/joins per run"
        ) from None
    for name, arm in results["arms"].items():
        print(f"{name}: {arm['final']}")
    if args["out"]:
        print(f"results: {Path(args['out']) / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
