"""Training throughput: a reference loop shaped like the official code vs this trainer.

    python benchmarks/throughput.py [--steps 50] [--out results/benchmarks.json]

(a) reference: fp32, eager, batch 128, augmentation per image in CPU DataLoader workers
    (torchvision crop/flip, timm RandAugment rand-m9-mstd0.5-inc1, timm RandomErasing) and
    timm's Mixup on the batch, as Compact Transformers' train script does;
(b) this trainer: the same recipe as batched tensor ops on the device, bf16/fp16 autocast on a
    GPU, optionally torch.compile (``--compile``).
Prints both, their ratio, peak GPU memory and the projected wall time of a 310-epoch
ViT-Lite-7/4 CIFAR-10 run, and merges them into the JSON file under the device's name.
A figure to read, not a test: the machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lape_lib import create_model
from lape_lib.train import environment, measure_throughput, param_groups, soft_cross_entropy

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
EPOCH_IMAGES = 50_000 * 310


class SafeRandAugment:
    """timm's RandAugment, retried when Pillow rejects a drawn op.

    With magnitude std 0.5 the magnitude can reach 10, where timm's PosterizeIncreasing asks
    for 0 bits and current Pillow raises ``ValueError``; a re-draw is what an older Pillow's
    silent acceptance amounted to in practice.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers for the reference (default: all cores)")
    p.add_argument("--compile", action="store_true", help="torch.compile this trainer's model")
    p.add_argument("--compile-mode", default=None, help="e.g. reduce-overhead (CUDA graphs); avoid max-autotune")
    p.add_argument("--n-models", type=int, default=1, help="models trained on the same batches in (b)")
    p.add_argument("--out", default="results/benchmarks.json")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workers = args.workers if args.workers is not None else (torch.multiprocessing.cpu_count() if device.type == "cuda" else 2)
    ref = reference_loop(args.steps, args.batch_size, workers, device)
    ours = measure_throughput("vit_lite_7_4", batch_size=args.batch_size, steps=args.steps, warmup=3, device=str(device),
                              compile_model=args.compile, compile_mode=args.compile_mode, n_models=args.n_models)
    env = environment()
    name = env["gpu"] or f"cpu ({env['cpu_threads']} threads)"
    row = {
        "device": name, "environment": env, "steps": args.steps, "batch_size": args.batch_size,
        "reference_images_per_s": ref, "reference_workers": workers,
        "trainer_images_per_s": ours["images_per_s"], "trainer_precision": ours["precision"], "trainer_compile": args.compile,
        "trainer_compile_mode": args.compile_mode,
        "trainer_models": args.n_models, "speedup": ours["images_per_s"] / ref,
        "peak_gpu_memory_gb": ours["peak_gpu_memory_gb"],
        "projected_310_epochs_min": {"reference": EPOCH_IMAGES / ref / 60, "trainer": EPOCH_IMAGES * args.n_models / ours["images_per_s"] / 60},
        "command": "python benchmarks/throughput.py " + " ".join(
            [f"--steps {args.steps}", f"--batch-size {args.batch_size}"] + (["--compile"] if args.compile else [])
            + ([f"--n-models {args.n_models}"] if args.n_models > 1 else [])),
    }
    out = Path(args.out)
    table = json.loads(out.read_text()) if out.exists() else {}
    table[name] = row
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1))
    print(f"device:     {name}")
    print(f"reference:  {ref:9.1f} images/s  (fp32, eager, {workers} CPU workers)")
    print(f"trainer:    {ours['images_per_s']:9.1f} images/s  ({ours['precision']}, compile={args.compile}, {args.n_models} model(s))")
    print(f"speed-up:   {row['speedup']:9.2f} x")
    if ours["peak_gpu_memory_gb"] is not None:
        print(f"peak GPU memory: {ours['peak_gpu_memory_gb']:.2f} GB")
    proj = row["projected_310_epochs_min"]
    print(f"310 epochs of ViT-Lite-7/4 on CIFAR-10: reference {proj['reference']:.0f} min for one model, trainer {proj['trainer']:.0f} min for {args.n_models}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
