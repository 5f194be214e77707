"""Training throughput: a reference loop shaped like the official code vs this trainer.

    python benchmarks/throughput.py [--steps 50] [--out results/benchmarks.json]

(a) reference: eager, batch 128, augmentation per image in CPU DataLoader workers (torchvision
    crop/flip, bilinear where the recipe draws the interpolation; timm RandAugment
    rand-m9-mstd0.5-inc1, timm RandomErasing) and timm's Mixup on the batch, shaped like Compact
    Transformers' train script but in fp32 (theirs uses AMP), training an ``add`` model;
(b) this trainer (a ``lape`` model): the same recipe as batched tensor ops on the device, bf16/fp16 autocast on a
    GPU, optionally torch.compile (``--compile``) or the whole step as one CUDA graph (``--cuda-graph``).
Prints both, their ratio, peak GPU memory and the projected wall time of a 310-epoch
ViT-Lite-7/4 CIFAR-10 run, and merges them into the JSON file under the device's name and the
variant (model, batch, models, precision, compile). With ``--model timm/deit_tiny_patch16_224
--img-size 224 --num-classes 1000`` it measures (b) alone and projects the device-hours of a
310-epoch ImageNet-1K run (the model step; the loader is ``benchmarks/loader.py``'s figure).
A figure to read, not a test: the machines are noisy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lape_lib import create_model
from lape_lib.speed import measure_throughput
from lape_lib.train import environment, param_groups, soft_cross_entropy

from _table import merge_row  # benchmarks/ itself: on the path when run as a script

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
EPOCH_IMAGES = 50_000 * 310
IMAGENET_EPOCH_IMAGES = 1_281_167 * 310


class SafeRandAugment:
    """timm's RandAugment, retried when Pillow rejects a drawn op.

    With magnitude std 0.5 the magnitude can reach 10, where timm's PosterizeIncreasing asks
    for 0 bits and current Pillow raises ``ValueError`` (an older Pillow returned a black image);
    here the whole RandAugment is drawn again (up to 5 tries; then the image passes unchanged).
    """

    def __init__(self, config: str = "rand-m9-mstd0.5-inc1") -> None:
        from timm.data import rand_augment_transform

        self.inner = rand_augment_transform(config, {"translate_const": 10, "img_mean": tuple(round(255 * m) for m in MEAN)})

    def __call__(self, img):
        for _ in range(5):
            try:
                return self.inner(img)
            except ValueError:
                continue
        return img


class SyntheticCifar(Dataset):
    def __init__(self, n: int, transform) -> None:
        from PIL import Image

        rng = np.random.default_rng(0)
        self.images = [Image.fromarray(a) for a in rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)]
        self.labels = rng.integers(0, 10, n)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


def reference_loop(steps: int, batch_size: int, workers: int, device: torch.device) -> float:
    from timm.data import Mixup
    from timm.data.random_erasing import RandomErasing
    from torchvision import transforms as T

    transform = T.Compose([
        T.RandomResizedCrop(32, scale=(0.8, 1.0)), T.RandomHorizontalFlip(), SafeRandAugment(), T.ToTensor(),
        T.Normalize(MEAN, STD), RandomErasing(0.25, mode="pixel", device="cpu"),
    ])
    loader = DataLoader(SyntheticCifar(batch_size * (steps + 3), transform), batch_size=batch_size, shuffle=True,
                        num_workers=workers, drop_last=True, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=10)
    torch.manual_seed(0)
    model = create_model("vit_lite_7_4", join="add").to(device)
    opt = torch.optim.AdamW(param_groups(model, 0.06), lr=5.5e-4)
    t0, seen = 0.0, 0
    for i, (x, y) in enumerate(loader):
        if i == 3:  # warm-up done
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, seen = time.perf_counter(), 0
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        x, t = mixup(x, y)
        loss = soft_cross_entropy(model(x), t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers for the reference (default: all cores with a GPU, 2 on a CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile this trainer's model and augmentation")
    p.add_argument("--compile-mode", default=None, help="e.g. reduce-overhead (CUDA graphs); avoid max-autotune")
    p.add_argument("--n-models", type=int, default=1, help="models (seeds) trained at once in (b), each on its own batch")
    p.add_argument("--stack-seeds", action="store_true", help="train the --n-models seeds as one vmapped model")
    p.add_argument("--cuda-graph", action="store_true", help="replay each model's whole step from one CUDA graph (GPU)")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="(b)'s autocast: auto is fp32 on a CPU; bf16 asks whether this CPU's bf16 is any faster")
    p.add_argument("--model", default="vit_lite_7_4", help="(b)'s model, e.g. timm/deit_tiny_patch16_224 with --img-size 224")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--no-reference", action="store_true", help="skip (a); implied for any other model than ViT-Lite-7/4 at 32 px")
    p.add_argument("--out", default="results/benchmarks.json")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cifar = args.model == "vit_lite_7_4" and args.img_size == 32
    workers = args.workers if args.workers is not None else (torch.multiprocessing.cpu_count() if device.type == "cuda" else 2)
    ref = None if args.no_reference or not cifar else reference_loop(args.steps, args.batch_size, workers, device)
    ours = measure_throughput(args.model, batch_size=args.batch_size, steps=args.steps, warmup=3, device=str(device),
                              compile_model=args.compile, compile_mode=args.compile_mode, n_models=args.n_models,
                              img_size=args.img_size, num_classes=args.num_classes, stack_seeds=args.stack_seeds,
                              cuda_graph=args.cuda_graph, precision=args.precision)
    env = environment()
    name = env["gpu"] or f"cpu ({env['cpu_threads']} threads)"
    variant = (f"{args.model}@{args.img_size} b{args.batch_size} x{args.n_models} {ours['precision'].replace('torch.', '')}"
               + (f" compile={args.compile_mode or 'default'}" if args.compile else " eager")
               + (" stacked" if args.stack_seeds else "") + (" cuda-graph" if args.cuda_graph else ""))
    per_model = ours["images_per_s"] / args.n_models
    command = "python benchmarks/throughput.py " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a)
    row = {
        "device": name, "variant": variant, "environment": env, "steps": args.steps, "batch_size": args.batch_size,
        "model": args.model, "img_size": args.img_size, "num_classes": args.num_classes,
        "reference_images_per_s": ref, "reference_workers": workers if ref is not None else None,
        "trainer_images_per_s": ours["images_per_s"], "trainer_precision": ours["precision"], "trainer_compile": args.compile,
        "trainer_compile_mode": args.compile_mode, "trainer_models": args.n_models, "trainer_stack_seeds": args.stack_seeds,
        "trainer_cuda_graph": args.cuda_graph,
        "speedup": ours["images_per_s"] / ref if ref else None, "peak_gpu_memory_gb": ours["peak_gpu_memory_gb"],
        "command": command,
    }
    if cifar:
        row["projected_310_epochs_min"] = {"reference": EPOCH_IMAGES / ref / 60 if ref else None,
                                           "trainer": EPOCH_IMAGES * args.n_models / ours["images_per_s"] / 60}
    else:  # ImageNet-1K scale: 310 epochs of 1,281,167 images per model, the model step alone
        row["projected_imagenet_310_epochs_gpu_hours_per_model"] = IMAGENET_EPOCH_IMAGES / per_model / 3600
    out = Path(args.out)
    merge_row(out, f"{name} | {variant}", row)
    print(f"device:     {name}")
    if ref is not None:
        print(f"reference:  {ref:9.1f} images/s  (fp32, eager, {workers} CPU workers)")
    print(f"trainer:    {ours['images_per_s']:9.1f} images/s  ({variant})")
    if ref is not None:
        print(f"speed-up:   {row['speedup']:9.2f} x")
    if ours["peak_gpu_memory_gb"] is not None:
        print(f"peak GPU memory: {ours['peak_gpu_memory_gb']:.2f} GB")
    if cifar:
        proj = row["projected_310_epochs_min"]
        ref_txt = f"reference {proj['reference']:.0f} min for one model, " if ref else ""
        print(f"310 epochs of ViT-Lite-7/4 on CIFAR-10: {ref_txt}trainer {proj['trainer']:.1f} min for {args.n_models}")
    else:
        hours = row["projected_imagenet_310_epochs_gpu_hours_per_model"]
        print(f"310 epochs of ImageNet-1K, model step alone: {hours:.1f} device-hours per model")
    print(f"written to {out} as {name} | {variant}")
    return row


if __name__ == "__main__":
    main()
