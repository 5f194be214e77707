"""Test accuracy of every arm of a run at initialization (before any step), beside its first epochs,
and the PE's share of layer 1's attention input at that point (``analysis.pe_share``).

    python scripts/init_accuracy.py results/cpu_controls_d7/results.json --out results/cpu_controls_d7/init_accuracy.json

Each arm is rebuilt exactly as the trainer draws it (its seed, pe and join spec) and evaluated on
the run's own test images (the same data, subset and normalization), so "where did the arms
start" can be read beside the history in results.json: a gap after the first epoch is a gap in
the starting functions only if it was there at step 0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lape_lib.analysis import pe_share
from lape_lib.augment import BatchAugment
from lape_lib.config import TrainConfig, arm_label, initial_model, load_data
from lape_lib.files import write_json
from lape_lib.train import evaluate, resolve_device


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    run = json.loads(Path(args.results).read_text())
    cfg = TrainConfig(**{**run["config"], "progress": False, "device": "cpu", "out_dir": None})
    data = load_data(cfg)
    device = resolve_device("cpu")
    aug = BatchAugment(cfg.augment, data.mean, data.std, data.num_classes)
    images = aug.normalize(data.test_x)  # what evaluate feeds the model (no augmentation at test)
    rows = {}
    for name, arm in run["arms"].items():
        model = initial_model(cfg, arm["seed"], arm["pe"], arm_label(arm), data.num_classes).to(device)
        at_init = evaluate(model, data.eval_batches(0, 1, device), aug, torch.float32, device, 1)["test_acc"]
        share = None if model.pos_embed is None else round(pe_share(model, images)["share"], 4)
        rows[name] = {"arm": arm_label(arm), "seed": arm["seed"], "test_acc_init": at_init, "pe_share_init": share,
                      "test_acc_by_epoch": [h.get("test_acc") for h in arm["history"]]}
        print(f"{name:28s} init {at_init:5.1f} %  PE share {share}  then "
              + " ".join(f"{a:.1f}" for a in rows[name]["test_acc_by_epoch"]))
    out = {"results": args.results, "data_source": data.source, "n_test": data.n_test, "arms": rows,
           "command": "python scripts/init_accuracy.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])}
    write_json(args.out, out)
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
