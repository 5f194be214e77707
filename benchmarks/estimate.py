"""How far the time estimate the training notebooks print is from the run it predicts.

    python benchmarks/estimate.py [--epochs 1] [--compile] [--out results/estimate.json]

Builds notebook 02's ``cpu`` preset run (a 2-layer ViT-Lite-7/4, its five arms, 2,000 images,
batch 64; the toy set, so that no CIFAR copy is needed: the step costs the same), asks
``estimate_minutes`` for it, trains it for ``--epochs`` and compares the estimate with the
training loop's measured time (``results["wall_s"]``: the steps alone, as the estimate counts
them). The target is agreement within 25 %, with compilation on and off. A figure to read, not a
test: the machines are noisy.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from lape_lib.augment import AugmentConfig
from lape_lib.config import TrainConfig
from lape_lib.speed import estimate_minutes
from lape_lib.train import environment, train

from _table import command, merge_row  # benchmarks/ itself: on the path when run as a script


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="torch.compile the models and the augmentation")
    p.add_argument("--steps", type=int, default=3, help="steps the estimate times (the notebooks' default: 3)")
    p.add_argument("--out", default="results/estimate.json")
    args = p.parse_args(argv)
    cfg = TrainConfig(model="vit_lite_7_4", model_overrides={"depth": 2}, dataset="toy", n_train=2000, n_test=200,
                      joins=("add", "add@1.0", "add_norm", "lape_shared", "lape"), epochs=args.epochs, warmup_epochs=0,
                      cooldown_epochs=0, batch_size=64, lr=1e-3, augment=AugmentConfig.off(), progress=False,
                      compile=args.compile, eval_every=10_000)
    t0 = time.perf_counter()
    est = estimate_minutes(cfg, steps=args.steps)
    estimate_s = time.perf_counter() - t0
    results = train(replace(cfg))
    measured_min = results["wall_s"] / 60
    env = environment()
    name = env["gpu"] or f"cpu ({env['cpu_threads']} threads)"
    key = f"{name} | cpu preset x5 b64 e{args.epochs}" + (" compile" if args.compile else " eager")
    row = {"device": name, "environment": env, "estimate_min": est["minutes"], "measured_min": measured_min,
           "ratio": est["minutes"] / measured_min, "estimate_images_per_s": est["images_per_s"],
           "measured_images_per_s": results["arms"][next(iter(results["arms"]))]["history"][-1]["images_per_s"],
           "estimate_took_s": estimate_s,
           "command": command("estimate.py", argv)}
    merge_row(args.out, key, row)
    print(f"{key}: estimated {est['minutes']:.2f} min, measured {measured_min:.2f} min "
          f"(estimate / measured = {row['ratio']:.2f}; the estimate itself took {estimate_s:.0f} s)")
    print(f"written to {args.out} as {key}")
    return row


if __name__ == "__main__":
    main()
