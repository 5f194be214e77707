"""Training-step variants timed side by side: interleaved rounds in one process.

    python benchmarks/paired_variants.py [--rounds 3] [--steps 6] [--out results/paired_variants.json]

A comparison between rows of separate benchmark runs mixes the variants' difference with the
machine's drift between runs (on 2 shared cores, tens of %). Here every round times each variant
once, in turn, so a ratio is taken within a round; the file keeps every round's images/s, each
ratio per round and its median. Variants: one model in fp32 and in bf16 autocast; three seeds as
separate models and as one stacked (vmapped) model. A figure to read, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lape_lib.files import write_json  # noqa: E402
from lape_lib.speed import measure_throughput  # noqa: E402
from lape_lib.train import environment  # noqa: E402

VARIANTS = {
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "3 seeds, separate": {"precision": "fp32", "n_models": 3},
    "3 seeds, stacked": {"precision": "fp32", "n_models": 3, "stack_seeds": True},
}
RATIOS = {"bf16 / fp32": ("bf16", "fp32"), "stacked / separate": ("3 seeds, stacked", "3 seeds, separate")}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", default="results/paired_variants.json")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        p.error(f"--rounds {args.rounds} and --steps {args.steps} must both be at least 1")
    rounds = []
    for r in range(args.rounds):
        row = {}
        for name, kw in VARIANTS.items():
            row[name] = round(measure_throughput("vit_lite_7_4", batch_size=args.batch_size, steps=args.steps, warmup=1,
                                                 **kw)["images_per_s"], 1)
        rounds.append(row)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v} images/s" for k, v in row.items()), flush=True)
    ratios = {label: [round(row[a] / row[b], 3) for row in rounds] for label, (a, b) in RATIOS.items()}
    out = {
        "command": "python benchmarks/paired_variants.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "model": "vit_lite_7_4", "batch_size": args.batch_size, "steps": args.steps, "variants": VARIANTS,
        "rounds": rounds, "ratios": ratios, "ratio_medians": {k: statistics.median(v) for k, v in ratios.items()},
        "environment": environment(),
    }
    write_json(args.out, out)
    for label, values in ratios.items():
        print(f"{label}: median {statistics.median(values):.2f} (rounds: {', '.join(f'{v:.2f}' for v in values)})")
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
