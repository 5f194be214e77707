"""Images/s of the streamed ImageFolder loader (decode + random resized crop in workers).

    python benchmarks/loader.py [--images 512] [--workers 0 1 2] [--out results/loader.json]

Writes a tree of synthetic JPEGs shaped like ImageNet's (500x375 at JPEG quality 90: smooth
random fields plus noise, since pure noise compresses far worse than photographs; the mean file
size is printed and saved, ImageNet's is about 110 kB), then
times ``lape_lib.stream`` reading it at 224 px with DeiT's crop, for each worker count. The
figure says how many CPU cores a GPU needs to be fed: divide the GPU step's images/s
(benchmarks/throughput.py) by the per-worker rate. A figure to read, not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lape_lib.stream import open_imagefolder
from lape_lib.train import environment

from _table import command, host_name, merge_row  # benchmarks/ itself: on the path when run as a script


def make_jpeg_tree(root: Path, n: int, size: tuple[int, int] = (500, 375), classes: int = 4) -> float:
    """``n`` JPEGs under root/train/<class>/ and a few under root/val/; returns the mean file size in kB."""
    rng = np.random.default_rng(0)
    w, h = size
    total = 0
    for i in range(n):
        coarse = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        arr = np.asarray(img).astype(np.int16) + rng.integers(-20, 21, (h, w, 3))
        split = "val" if i < classes else "train"
        folder = root / split / f"c{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i}.jpg"
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        total += path.stat().st_size
    return total / n / 1e3


def time_loader(root: Path, workers: int, batch_size: int, img_size: int) -> float:
    data = open_imagefolder(root, img_size, crop_scale=(0.08, 1.0), workers=workers)
    order = torch.randperm(data.n_train, generator=torch.Generator().manual_seed(0))
    if data.n_train < 3 * batch_size:
        raise SystemExit(f"--images gives {data.n_train} training images: fewer than 3 batches of {batch_size}")
    batches = data.seed_batches(0, 0, order, batch_size, rank=0, world=1)
    next(batches)  # workers started and warm
    t0, seen = time.perf_counter(), 0
    for x, _ in batches:
        seen += len(x)
    return seen / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--out", default="results/loader.json")
    args = p.parse_args(argv)
    env = environment()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        kb = make_jpeg_tree(Path(tmp), args.images)
        print(f"{args.images} synthetic 500x375 JPEGs, mean {kb:.0f} kB")
        for w in args.workers:
            rate = time_loader(Path(tmp), w, args.batch_size, args.img_size)
            rows[str(w)] = rate
            print(f"workers={w}: {rate:7.1f} images/s" + (" (in the main process)" if w == 0 else ""))
    name = host_name(env)
    record = {"device": name, "environment": env, "images": args.images, "mean_jpeg_kb": kb, "img_size": args.img_size,
              "batch_size": args.batch_size, "images_per_s_by_workers": rows,
              "command": command("loader.py", argv)}
    out = Path(args.out)
    merge_row(out, name, record)
    print(f"written to {out}")
    return record


if __name__ == "__main__":
    main()
