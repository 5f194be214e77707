"""Paired statistics over finished training runs: the add-vs-LaPE table the README shows.

    python -m lape_lib.report runs/c10_vit/results.json [more results.json ...] \
        --out results/c10_vit_lite_7_4.json --figures results/figures/c10_vit_lite_7_4

A gain under 1 % is close to seed noise for these models, so one number per arm says little.
Runs of :mod:`lape_lib.train` that share a seed see identical batches and augmentation, so
the right statistic is the per-seed difference: its mean, a 95 % Student-t interval and a
paired t-test, next to the paper's figures.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# ICCV 2023 paper, Table 2 (CIFAR, learnable PE, 300 epochs, mean of 5 seeds, no spread given) and
# Table 1 (ImageNet-1K, 300 epochs): (default "add", LaPE) top-1 in %. See ../shared/docs/recipe.md.
PUBLISHED: dict[tuple[str, str], tuple[float, float]] = {
    ("cifar10", "vit_lite_7_4"): (93.448, 94.290),
    ("cifar10", "cvt_7_4"): (94.302, 94.690),
    ("cifar10", "cct_7_3x1"): (96.034, 96.530),
    ("cifar100", "vit_lite_7_4"): (74.984, 75.534),
    ("cifar100", "cvt_7_4"): (77.452, 78.052),
    ("cifar100", "cct_7_3x1"): (80.928, 81.986),
    ("imagefolder", "timm/deit_tiny_patch16_224"): (71.54, 73.11),
    ("imagefolder", "timm/deit_small_patch16_224"): (80.00, 80.54),
    ("imagefolder", "timm/deit_base_patch16_224"): (81.64, 81.97),
}
PUBLISHED_SOURCE = "LaPE, ICCV 2023: Table 2 (CIFAR, mean of 5 seeds) and Table 1 (ImageNet-1K)"


def load_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """``results.json`` files written by the trainer (a folder stands for its ``results.json``)."""
    runs = []
    for path in map(Path, paths):
        file = path / "results.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"no trainer results at {file}; pass a results.json or the run's --out folder")
        run = json.loads(file.read_text())
        if "arms" not in run or "config" not in run:
            raise ValueError(f"{file} is not a lape_lib.train results file (no 'arms'/'config')")
        run["path"] = str(file)
        runs.append(run)
    return runs


# Config fields that may differ between runs of one comparison (what pairs them, or bookkeeping).
_FREE_FIELDS = ("seeds", "joins", "pes", "out_dir", "device", "compile", "compile_mode", "eval_every", "progress",
                "save_weights", "data_root", "download")

# Model overrides that leave the architecture as published (so its published figure applies).
_REGULARIZATION_OVERRIDES = {"drop_path_rate", "drop_rate", "attn_drop_rate"}


def _model_label(cfg: Mapping[str, Any]) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in sorted(cfg.get("model_overrides", {}).items()))
    return f"{cfg['model']} ({extra})" if extra else cfg["model"]


def _final_accuracy(arm: Mapping[str, Any]) -> float | None:
    return arm.get("final", {}).get("test_acc")


def _describe(values: Sequence[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=float)
    return {"n": len(a), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else None,
            "min": float(a.min()), "max": float(a.max())}


def paired_difference(treatment: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean of ``treatment - baseline`` over paired seeds, a Student-t interval and a paired t-test.

    With one pair there is no spread: the interval and p-value are None.
    """
    from scipy import stats

    if len(treatment) != len(baseline) or not treatment:
        raise ValueError(f"paired samples need equal, non-zero lengths; got {len(treatment)} and {len(baseline)}")
    d = np.asarray(treatment, dtype=float) - np.asarray(baseline, dtype=float)
    out: dict[str, Any] = {"n": len(d), "mean": float(d.mean()), "std": None, "ci": None, "confidence": confidence,
                           "t": None, "p_value": None, "per_seed": d.tolist()}
    if len(d) > 1:
        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1)) * sd / math.sqrt(len(d))
        out.update(std=sd, ci=[out["mean"] - half, out["mean"] + half])
        if sd > 0:
            test = stats.ttest_rel(np.asarray(treatment, dtype=float), np.asarray(baseline, dtype=float))
            out.update(t=float(test.statistic), p_value=float(test.pvalue))
    return out


def compare(runs: Sequence[Mapping[str, Any]], baseline: str = "add", treatment: str = "lape",
            allow_unfinished: bool = False) -> list[dict[str, Any]]:
    """One paired comparison per (dataset, model, pe) and training setting found in ``runs``.

    Runs are pooled only when every setting except seeds, joins, PE types and bookkeeping
    (device, output folder, compile) is the same, so a shorter schedule or another model
    override makes its own row.

    Seeds trained under both joins are paired; a seed with only one of them is listed in
    ``unpaired`` and left out of the statistics. Unfinished runs are refused unless
    ``allow_unfinished`` (their "final" accuracy is a mid-run one).
    """
    groups: dict[tuple[str, str, str, int, str], dict[str, Any]] = {}
    for run in runs:
        cfg = run["config"]
        if not run.get("done") and not allow_unfinished:
            raise ValueError(f"{run.get('path', 'a run')} is unfinished (done=false); resume it, or pass allow_unfinished")
        for arm in run["arms"].values():
            acc = _final_accuracy(arm)
            if acc is None or arm["join"] not in (baseline, treatment):
                continue
            setting = json.dumps({k: v for k, v in cfg.items() if k not in _FREE_FIELDS}, sort_keys=True)
            key = (cfg["dataset"], _model_label(cfg), arm["pe"], int(cfg["epochs"]), setting)
            group = groups.setdefault(key, {"acc": {baseline: {}, treatment: {}}, "sources": [], "wall_s": 0.0, "devices": set()})
            if arm["seed"] in group["acc"][arm["join"]]:
                raise ValueError(f"seed {arm['seed']} of {key[:4]} {arm['join']} appears in two runs; pass each run once")
            group["acc"][arm["join"]][arm["seed"]] = acc
            if run.get("path") not in group["sources"]:
                group["sources"].append(run.get("path"))
                group["wall_s"] += float(run.get("wall_s", 0.0))
                env = run.get("environment", {})
                group["devices"].add(env.get("gpu") or f"CPU ({env.get('cpu_threads', '?')} threads)")
            group.setdefault("command", run.get("command"))
            group.setdefault("data_source", run.get("data_source"))
    out = []
    for (dataset, model, pe, epochs, setting), g in sorted(groups.items()):
        base, treat = g["acc"][baseline], g["acc"][treatment]
        seeds = sorted(set(base) & set(treat))
        row: dict[str, Any] = {
            "dataset": dataset, "model": model, "pe": pe, "epochs": epochs, "baseline": baseline, "treatment": treatment,
            "seeds": seeds, "unpaired": sorted(set(base) ^ set(treat)),
            "per_seed": [{"seed": s, baseline: base[s], treatment: treat[s], "difference": treat[s] - base[s]} for s in seeds],
            baseline: _describe([base[s] for s in seeds]) if seeds else None,
            treatment: _describe([treat[s] for s in seeds]) if seeds else None,
            "difference": paired_difference([treat[s] for s in seeds], [base[s] for s in seeds]) if seeds else None,
            "published": None, "sources": g["sources"], "command": g["command"], "data_source": g["data_source"],
            "wall_s": g["wall_s"], "devices": sorted(g["devices"]), "setting": json.loads(setting),
        }
        cfg = row["setting"]
        same_architecture = set(cfg.get("model_overrides", {})) <= _REGULARIZATION_OVERRIDES
        if pe == "learnable" and same_architecture and (dataset, cfg["model"]) in PUBLISHED:
            b, t = PUBLISHED[(dataset, cfg["model"])]
            row["published"] = {baseline: b, treatment: t, "difference": round(t - b, 3), "source": PUBLISHED_SOURCE}
        out.append(row)
    return out


def _pm(stats: Mapping[str, Any] | None) -> str:
    if not stats:
        return "–"
    return f"{stats['mean']:.2f} ± {stats['std']:.2f}" if stats.get("std") is not None else f"{stats['mean']:.2f}"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The README table: mean ± std per arm (over seeds), the paired difference with its interval."""
    lines = ["| dataset | model | PE | epochs | seeds | add | lape | lape − add (95 % CI) | p | paper add → lape |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["difference"]
        if d is None:
            diff, p = "–", "–"
        else:
            diff = f"{d['mean']:+.2f}" + (f" [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]" if d["ci"] else "")
            p = f"{d['p_value']:.3f}" if d["p_value"] is not None else "–"
        pub = r["published"]
        paper = f"{pub[r['baseline']]:.2f} → {pub[r['treatment']]:.2f} ({pub['difference']:+.2f})" if pub else "–"
        lines.append(f"| {r['dataset']} | {r['model']} | {r['pe']} | {r['epochs']} | {len(r['seeds'])} | "
                     f"{_pm(r[r['baseline']])} | {_pm(r[r['treatment']])} | {diff} | {p} | {paper} |")
    return "\n".join(lines)


def verdict(row: Mapping[str, Any]) -> str:
    """One honest sentence on whether the paired runs show a gain, and how it compares with the paper."""
    d = row["difference"]
    if d is None or d["ci"] is None:
        return f"{row['model']} ({row['pe']}): too few paired seeds for an interval."
    lo, hi = d["ci"]
    if lo > 0:
        said = f"LaPE is better by {d['mean']:+.2f} points (95 % CI {lo:+.2f} to {hi:+.2f}, {d['n']} paired seeds)"
    elif hi < 0:
        said = f"LaPE is worse by {d['mean']:+.2f} points (95 % CI {lo:+.2f} to {hi:+.2f}, {d['n']} paired seeds)"
    else:
        said = (f"the difference, {d['mean']:+.2f} points (95 % CI {lo:+.2f} to {hi:+.2f}, {d['n']} paired seeds), "
                "is not distinguishable from zero")
    pub = row["published"]
    if pub:
        inside = lo <= pub["difference"] <= hi
        said += f"; the paper's {pub['difference']:+.2f} is {'inside' if inside else 'outside'} that interval"
    return f"{row['model']} on {row['dataset']} ({row['pe']} PE, {row['epochs']} epochs): {said}."


def write_figures(runs: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], prefix: str | Path) -> list[Path]:
    """Learning curves of every run and the per-seed differences; PNG files named ``prefix``-*.png."""
    import matplotlib.pyplot as plt

    from .plotting import plot_history, plot_paired_differences

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for i, run in enumerate(runs):
        fig = plot_history(run)
        written.append(prefix.with_name(f"{prefix.name}-curves{i if len(runs) > 1 else ''}.png"))
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    fig = plot_paired_differences(rows)
    written.append(prefix.with_name(f"{prefix.name}-differences.png"))
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m lape_lib.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="results.json files (or run folders) written by lape_lib.train")
    p.add_argument("--baseline", default="add")
    p.add_argument("--treatment", default="lape")
    p.add_argument("--out", help="write the comparison rows as JSON here")
    p.add_argument("--figures", help="write PNG figures with this path prefix")
    p.add_argument("--allow-unfinished", action="store_true", help="report runs that have not reached their last epoch")
    args = p.parse_args(argv)
    try:
        runs = load_results(args.runs)
        rows = compare(runs, args.baseline, args.treatment, allow_unfinished=args.allow_unfinished)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    print(markdown_table(rows))
    for row in rows:
        print(verdict(row))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"rows": rows, "verdicts": [verdict(r) for r in rows]}, indent=1) + "\n")
        print(f"wrote {args.out}")
    if args.figures:
        for path in write_figures(runs, rows, args.figures):
            print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
