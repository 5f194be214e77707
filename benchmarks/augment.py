"""Images/s of the recipe's batched augmentation alone, for several seeds' batches.

    python benchmarks/augment.py [--seeds 3] [--batch-size 128] [--steps 20] [--out results/augment.json]

Three ways to augment one step's batches, one per seed (full recipe: crop, flip, RandAugment,
erasing, mixup/cutmix): (a) one eager call per seed, as the trainer did before; (b) one eager
pass over all seeds (``BatchAugment.many``); (c) that pass compiled (``--compile`` in the
trainer). On a GPU the eager version is a few hundred small kernel launches per call, so (b)
and (c) are what the launch-bound step gains; on a CPU, which is compute-bound, expect little.
A figure to read, not a test: the machines are noisy.
"""

from __future__ import annotations

import argparse
import time

import torch

from lape_lib.augment import AugmentConfig, BatchAugment
from lape_lib.train import augment_seeds, batch_generator, environment

from _table import command, merge_row  # benchmarks/ itself: on the path when run as a script

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def images_per_s(run, steps: int, images_per_step: int, device: torch.device) -> float:
    for i in range(3):  # warm-up (and compilation)
        run(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        run(3 + i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * images_per_step / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default="results/augment.json")
    args = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    g = torch.Generator().manual_seed(0)
    batch = {s: (torch.randint(0, 256, (args.batch_size, 3, 32, 32), generator=g, dtype=torch.uint8).to(device),
                 torch.randint(0, 10, (args.batch_size,), generator=g).to(device)) for s in range(args.seeds)}
    eager = BatchAugment(AugmentConfig(), MEAN, STD, 10)
    compiled = BatchAugment(AugmentConfig(), MEAN, STD, 10, compile=True)
    n = args.seeds * args.batch_size
    ways = {
        "one_call_per_seed": lambda i: [eager(x, y, batch_generator(s, 0, i, device)) for s, (x, y) in batch.items()],
        "one_pass": lambda i: augment_seeds(eager, batch, 0, i, device),
        "one_pass_compiled": lambda i: augment_seeds(compiled, batch, 0, i, device),
    }
    rates = {name: images_per_s(run, args.steps, n, device) for name, run in ways.items()}
    env = environment()
    name = env["gpu"] or f"cpu ({env['cpu_threads']} threads)"
    key = f"{name} | x{args.seeds} b{args.batch_size}"
    row = {"device": name, "environment": env, "seeds": args.seeds, "batch_size": args.batch_size, "steps": args.steps,
           "images_per_s": rates, "command": command("augment.py", argv)}
    merge_row(args.out, key, row)
    print(f"device: {name}; {args.seeds} seeds x batch {args.batch_size}, full recipe")
    for way, rate in rates.items():
        print(f"{way:18s} {rate:10.1f} images/s  ({rate / rates['one_call_per_seed']:.2f} x)")
    print(f"written to {args.out} as {key}")
    return row


if __name__ == "__main__":
    main()
