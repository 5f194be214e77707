"""Paired statistics over finished training runs: the add-vs-LaPE table the README shows, and
every arm against a reference with the factor steps from ``add`` to ``lape`` (the controls).

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

from .config import REPORT_FREE_FIELDS, RESULTS_SCHEMA, arm_label, has_published_recipe
from .stats import ALPHA, describe, holm, paired_difference

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
        try:
            run = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{file} cannot be read as JSON ({err}); is it a results.json written by lape_lib.train?") from None
        _check_results(run, file)
        run["path"] = str(file)
        runs.append(run)
    return runs


# The results.json layouts this report reads (the trainer writes RESULTS_SCHEMA; a file without "schema" is 1).
KNOWN_SCHEMAS = tuple(range(1, RESULTS_SCHEMA + 1))


def _check_results(run: Any, file: Path) -> None:
    """Refuse, naming the file and the place, a results file that is not one, is of a layout this
    version cannot read, or holds impossible values."""
    if not isinstance(run, dict) or not isinstance(run.get("arms"), dict) or not isinstance(run.get("config"), dict):
        raise ValueError(f"{file} is not a lape_lib.train results file (no 'arms'/'config' objects)")
    schema = run.get("schema", 1)
    if schema not in KNOWN_SCHEMAS:
        raise ValueError(f"{file} has results schema {schema!r}; this lape_lib reads schemas {list(KNOWN_SCHEMAS)}: "
                         "update lape_lib to read it")
    for key in ("dataset", "model", "epochs"):
        if key not in run["config"]:
            raise ValueError(f"{file}: config has no {key!r}; not a lape_lib.train results file")
    epochs = run["config"]["epochs"]
    if not (isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1):
        raise ValueError(f"{file}: config.epochs is {epochs!r}; a number of epochs is an integer >= 1")
    if "done" in run and not isinstance(run["done"], bool):
        raise ValueError(f"{file}: done is {run['done']!r}; it is true or false (JSON booleans)")
    wall = run.get("wall_s", 0.0)
    if not (isinstance(wall, (int, float)) and not isinstance(wall, bool) and math.isfinite(wall) and wall >= 0):
        raise ValueError(f"{file}: wall_s is {wall!r}; a wall time is a finite number of seconds >= 0")
    for name, arm in run["arms"].items():
        if not isinstance(arm, dict) or not {"seed", "pe", "join"} <= set(arm) or not isinstance(arm.get("final", {}), dict):
            raise ValueError(f"{file}: arm {name!r} lacks seed/pe/join/final; not a lape_lib.train results file")
        acc = arm.get("final", {}).get("test_acc")
        if acc is not None and not (isinstance(acc, (int, float)) and math.isfinite(acc) and 0 <= acc <= 100):
            raise ValueError(f"{file}: arm {name!r} has test_acc {acc!r}; an accuracy is a percentage in [0, 100]")
    if run["arms"] and all(_final_accuracy(arm) is None for arm in run["arms"].values() if isinstance(arm, dict)):
        raise ValueError(f"{file}: no arm has a final test_acc (arms[...].final.test_acc); nothing to compare")



# Model overrides that leave the architecture as published and change only its regularization
# (lape_lib's names, ModelConfig's, and timm's): the paper's figure still stands beside such a run.
_REGULARIZATION_OVERRIDES = {"drop_path", "drop", "attn_drop", "drop_path_rate", "drop_rate", "attn_drop_rate"}


def _model_label(cfg: Mapping[str, Any]) -> str:
    extra = ", ".join(f"{k}={v}" for k, v in sorted(cfg.get("model_overrides", {}).items()))
    return f"{cfg['model']} ({extra})" if extra else cfg["model"]


def _final_accuracy(arm: Mapping[str, Any]) -> float | None:
    return arm.get("final", {}).get("test_acc")


def arm_labels(runs: Sequence[Mapping[str, Any]]) -> set[str]:
    """Every arm label that ``runs`` hold."""
    return {arm_label(arm) for run in runs for arm in run["arms"].values()}


def _require(runs: Sequence[Mapping[str, Any]], **roles: str) -> None:
    """Refuse an arm label (by its role: baseline, treatment, reference) that no run holds."""
    known = arm_labels(runs)
    for role, label in roles.items():
        if label not in known:
            raise ValueError(f"{role} arm {label!r} is in none of the runs; their arms are {sorted(known)}")


def _where(row: Mapping[str, Any]) -> str:
    return f"{row['model']} on {row['dataset']} ({row['pe']} PE, {row['epochs']} epochs)"


def _groups(runs: Sequence[Mapping[str, Any]], labels: Sequence[str] | None, allow_unfinished: bool) -> dict[tuple, dict[str, Any]]:
    """Final accuracies by (dataset, model, pe, epochs, setting) -> arm label -> seed (only ``labels``, if given)."""
    groups: dict[tuple[str, str, str, int, str], dict[str, Any]] = {}
    for run in runs:
        cfg = run["config"]
        if not run.get("done") and not allow_unfinished:
            raise ValueError(f"{run.get('path', 'a run')} is unfinished (done=false); resume it, or pass allow_unfinished")
        for arm in run["arms"].values():
            acc, label = _final_accuracy(arm), arm_label(arm)
            if acc is None or (labels is not None and label not in labels):
                continue
            # What the images were is part of the setting: runs on different data never share a row
            # (results from before schema 2 carry no identity, and group as they always did).
            setting = json.dumps({**{k: v for k, v in cfg.items() if k not in REPORT_FREE_FIELDS},
                                  "data_identity": run.get("data_identity")}, sort_keys=True)
            key = (cfg["dataset"], _model_label(cfg), arm["pe"], int(cfg["epochs"]), setting)
            group = groups.setdefault(key, {"acc": {}, "sources": [], "wall_s": 0.0, "devices": set()})
            by_seed = group["acc"].setdefault(label, {})
            if arm["seed"] in by_seed:
                raise ValueError(f"seed {arm['seed']} of {key[:4]} {label} appears in two runs; pass each run once")
            by_seed[arm["seed"]] = acc
            if run.get("path") not in group["sources"]:
                group["sources"].append(run.get("path"))
                group["wall_s"] += float(run.get("wall_s", 0.0))
                env = run.get("environment", {})
                group["devices"].add(env.get("gpu") or f"CPU ({env.get('cpu_threads', '?')} threads)")
            group.setdefault("command", run.get("command"))
            group.setdefault("data_source", run.get("data_source"))
    return groups


def _group_fields(key: tuple, group: Mapping[str, Any]) -> dict[str, Any]:
    dataset, model, pe, epochs, setting = key
    return {"dataset": dataset, "model": model, "pe": pe, "epochs": epochs, "sources": group["sources"],
            "command": group["command"], "data_source": group["data_source"], "wall_s": group["wall_s"],
            "devices": sorted(group["devices"]), "setting": json.loads(setting)}


def compare(runs: Sequence[Mapping[str, Any]], baseline: str = "add", treatment: str = "lape",
            allow_unfinished: bool = False) -> list[dict[str, Any]]:
    """One paired comparison per (dataset, model, pe) and training setting found in ``runs``.

    ``baseline`` and ``treatment`` are arm labels (a join, or JOIN@STD). Runs are pooled only
    when every setting except seeds, joins, PE types and bookkeeping (device, output folder,
    compile) is the same, so a shorter schedule or another model override makes its own row.

    Seeds trained under both arms are paired; a seed with only one of them is listed in
    ``unpaired`` and left out of the statistics. Unfinished runs are refused unless
    ``allow_unfinished`` (their "final" accuracy is a mid-run one).
    """
    _require(runs, baseline=baseline, treatment=treatment)
    if baseline == treatment:
        raise ValueError(f"baseline and treatment are the same arm ({baseline!r}); compare two different arms")
    out = []
    for key, g in sorted(_groups(runs, (baseline, treatment), allow_unfinished).items()):
        base, treat = g["acc"].get(baseline, {}), g["acc"].get(treatment, {})
        seeds = sorted(set(base) & set(treat))
        row: dict[str, Any] = {
            **_group_fields(key, g), "baseline": baseline, "treatment": treatment,
            "seeds": seeds, "unpaired": sorted(set(base) ^ set(treat)),
            "per_seed": [{"seed": s, baseline: base[s], treatment: treat[s], "difference": treat[s] - base[s]} for s in seeds],
            baseline: describe([base[s] for s in seeds]) if seeds else None,
            treatment: describe([treat[s] for s in seeds]) if seeds else None,
            "difference": paired_difference([treat[s] for s in seeds], [base[s] for s in seeds]) if seeds else None,
            "published": None,
        }
        cfg = row["setting"]
        same_architecture = set(cfg.get("model_overrides", {})) <= _REGULARIZATION_OVERRIDES
        # The paper's figure is set beside a run of its setting only (its recipe, its architecture, a
        # learnable PE, add against lape). A short or subsampled run answers another question. The
        # images are not checked beyond the dataset's name: an ImageFolder run is taken for ImageNet-1K.
        paper_arms = (baseline, treatment) == ("add", "lape")  # its figures are for these two joins
        if (paper_arms and row["pe"] == "learnable" and same_architecture and (row["dataset"], cfg["model"]) in PUBLISHED
                and has_published_recipe(cfg)):
            b, t = PUBLISHED[(row["dataset"], cfg["model"])]
            row["published"] = {baseline: b, treatment: t, "difference": round(t - b, 3), "source": PUBLISHED_SOURCE}
        out.append(row)
    return out


# The steps from ``add`` to ``lape``: (name, arm it starts from, arm it ends at, what it changes, kind).
# The "chain" steps add up to lape − add, seed by seed; a "side" comparison starts from an arm of the
# chain but is not one of its terms (it is an alternative to a step, or changes only the init).
# No step changes exactly one thing: out of stream also hands P to every layer instead of the
# first and takes it out of every LayerNorm's σ; init scale also changes how fast Adam moves P
# relative to its size (its updates do not scale with P).
FACTORS: tuple[tuple[str, str, str, str, str], ...] = (
    ("normalization", "add", "add_norm", "P through a LayerNorm of its own (scale set by the norm, learnable gain), once, into the stream", "chain"),
    ("out of stream", "add_norm", "lape_shared", "P kept out of the residual stream, handed to every layer's attention", "chain"),
    ("per layer", "lape_shared", "lape", "a PE LayerNorm per layer, chained (LaPE)", "chain"),
    ("per layer (parallel)", "lape_shared", "lape_parallel", "a PE LayerNorm per layer, each on the raw P (instead of chained)", "side"),
)


def _pair(acc: Mapping[str, Mapping[int, float]], start: str, end: str) -> dict[str, Any] | None:
    """``end − start`` paired by seed, or None where either arm is missing."""
    if start not in acc or end not in acc:
        return None
    seeds = sorted(set(acc[start]) & set(acc[end]))
    if not seeds:
        return None
    return {"from": start, "to": end, "seeds": seeds,
            **paired_difference([acc[end][s] for s in seeds], [acc[start][s] for s in seeds])}


def compare_arms(runs: Sequence[Mapping[str, Any]], reference: str = "lape",
                 allow_unfinished: bool = False) -> list[dict[str, Any]]:
    """Every arm against ``reference``, and the factor steps from ``add`` to ``lape``, per setting.

    Each row holds, for one (dataset, model, pe, setting): ``arms`` (label -> mean ± std over
    seeds), ``against_reference`` (label -> reference − arm, paired by seed, with a 95 % interval
    and p-value), and ``factors``: the steps of ``FACTORS`` that the run's arms allow, then one
    side comparison per ``add@STD`` arm (add@STD − add: the init scale alone), each with its
    p-value and ``p_holm``, Holm-corrected over the row's steps. Pooling and refusals are as in
    :func:`compare`.
    """
    _require(runs, reference=reference)
    out = []
    for key, g in sorted(_groups(runs, None, allow_unfinished).items()):
        acc: dict[str, dict[int, float]] = g["acc"]
        if reference not in acc:  # a setting trained without it
            continue
        against = {label: _pair(acc, label, reference) for label in acc if label != reference}
        factors = [{"factor": name, "adds": adds, "kind": kind, **pair} for name, start, end, adds, kind in FACTORS
                   if (pair := _pair(acc, start, end))]
        factors += [{"factor": f"init scale {label.partition('@')[2]}", "adds": f"a learnable P initialized at std {label.partition('@')[2]}",
                     "kind": "side", **pair} for label in sorted(acc) if label.startswith("add@") and (pair := _pair(acc, "add", label))]
        for f, adjusted in zip(factors, holm([f["p_value"] for f in factors])):
            f["p_holm"] = adjusted
        out.append({**_group_fields(key, g), "reference": reference,
                    "arms": {label: describe(list(by_seed.values())) for label, by_seed in acc.items()},
                    "per_seed": {label: dict(sorted(by_seed.items())) for label, by_seed in acc.items()},
                    "against_reference": against, "factors": factors, "total": _pair(acc, "add", reference)})
    return out


def _ci(d: Mapping[str, Any] | None) -> str:
    if not d:
        return "–"
    return f"{d['mean']:+.2f}" + (f" [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]" if d.get("ci") else "")


def _p(d: Mapping[str, Any] | None) -> str:
    return f"{d['p_value']:.3f}" if d and d.get("p_value") is not None else "–"


def arms_table(row: Mapping[str, Any]) -> str:
    """One setting's arms: mean ± std over seeds, and reference − arm paired by seed (95 % CI, p)."""
    ref = row["reference"]
    lines = [f"| arm | seeds | top-1 (%) | {ref} − arm (95 % CI) | p |", "|---|---|---|---|---|"]
    for label, stats in row["arms"].items():
        d = row["against_reference"].get(label)
        lines.append(f"| {label} | {stats['n']} | {_pm(stats)} | {'(reference)' if label == ref else _ci(d)} | {_p(d)} |")
    return "\n".join(lines)


def _p_holm(d: Mapping[str, Any]) -> str:
    return f"{d['p_holm']:.3f}" if d.get("p_holm") is not None else "–"


def factors_table(row: Mapping[str, Any]) -> str:
    """The factor steps: what each changes, its paired difference (95 % CI), p and Holm's p."""
    lines = ["| step | kind | arms | changes | difference (95 % CI) | p | p, Holm |", "|---|---|---|---|---|---|---|"]
    for f in row["factors"]:
        kind = "side comparison" if f.get("kind") == "side" else "step of lape − add"
        lines.append(f"| {f['factor']} | {kind} | {f['to']} − {f['from']} | {f['adds']} | {_ci(f)} | {_p(f)} | {_p_holm(f)} |")
    return "\n".join(lines)


def _clear(d: Mapping[str, Any]) -> bool | None:
    """Whether a paired difference's interval excludes zero (None: no interval)."""
    return None if d.get("ci") is None else (d["ci"][0] > 0 or d["ci"][1] < 0)


def _allows(d: Mapping[str, Any]) -> str:
    """What a difference's 95 % interval still allows, each way (intervals are rarely symmetric about zero)."""
    lo, hi = d["ci"]
    return "the same on every seed" if lo == hi else f"its interval allows anything from {lo:+.2f} to {hi:+.2f}"


def _name(f: Mapping[str, Any]) -> str:
    """A step as the verdict names it, with its interval and its p-value before → after the correction."""
    return (f"{f['factor']} ({f['to']} − {f['from']} {_ci(f)}" + (", a side comparison" if f.get("kind") == "side" else "")
            + f", p {_p(f)} → {_p_holm(f)})")


def factors_verdict(row: Mapping[str, Any]) -> str:
    """Which factor steps carry a difference after Holm's correction over the row's steps, which
    only before it, which the data cannot tell from zero (and what their intervals still allow),
    and what is left of ``reference`` against each ``add@STD`` arm."""
    where = _where(row)
    total, factors = row.get("total"), row["factors"]
    if not factors:
        return f"{where}: no factor step can be formed from these arms ({sorted(row['arms'])})."
    if any(f.get("ci") is None and not f.get("no_spread") for f in factors):
        return f"{where}: too few paired seeds for intervals; the factor steps cannot be told apart."
    said = [f"{where}"]
    if total:
        said.append(f": {row['reference']} − add = {_ci(total)} over {total['n']} paired seeds")
        if total.get("ci") and not _clear(total):
            said.append(", itself not distinguishable from zero")
    untested = [f for f in factors if f.get("no_spread")]  # every seed moved by the same amount: nothing to test
    tested = [f for f in factors if not f.get("no_spread")]
    corrected = [f for f in tested if f["p_holm"] < ALPHA]
    raw_only = [f for f in tested if _clear(f) and f not in corrected]
    unclear = [f for f in tested if not _clear(f)]
    family = f"Holm's correction over the {len(tested)} steps with a p-value"
    allowed = "; ".join(f"{f['factor']} ({_allows(f)})" for f in unclear)
    if not corrected and not raw_only:
        explained = "which factor carries the difference" if total and total.get("ci") and _clear(total) else \
            "whether any factor moves the accuracy"
        said.append(f". No step's 95 % interval excludes zero: at this number of seeds the data can't tell {explained}"
                    + (f" ({allowed})" if allowed else ""))
    else:
        said.append(f". Steps that carry a difference after {family} (p < {ALPHA}): "
                    + ("; ".join(_name(f) for f in corrected) or "none"))
        if raw_only:
            said.append(". Significant before the correction only (95 % interval excludes zero): "
                        + "; ".join(_name(f) for f in raw_only))
        if unclear:
            said.append(f". Not distinguishable from zero: {allowed}")
    if untested:
        said.append(". Not tested (every seed moved by the same amount, so there is no spread to test against): "
                    + "; ".join(f"{f['factor']} ({f['to']} − {f['from']} {f['mean']:+.2f})" for f in untested))
    for label, d in sorted(row["against_reference"].items()):
        if label.startswith("add@") and d and total:
            ref = row["reference"]
            if d["ci"] is None:
                closes = ("every seed differs by the same amount: no spread to test" if d.get("no_spread") else
                          "too few seeds to say whether the PE's init scale alone closes the gap")
            elif d["ci"][0] > 0:
                closes = f"a gap remains when only the PE's init scale is changed ({ref} ahead)"
            elif d["ci"][1] < 0:
                closes = f"{label} is ahead of {ref}: changing only the PE's init scale does more than {ref} here"
            else:
                closes = f"with the PE's init scale alone changed, no gap is distinguishable from zero ({_allows(d)})"
            said.append(f". Against {label}, {ref} − {label} = {_ci(d)}: {closes}")
    return "".join(said) + "."


def _pm(stats: Mapping[str, Any] | None) -> str:
    if not stats:
        return "–"
    return f"{stats['mean']:.2f} ± {stats['std']:.2f}" if stats.get("std") is not None else f"{stats['mean']:.2f}"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The README table: mean ± std per arm (over seeds), the paired difference with its interval.
    The columns are named after the rows' baseline and treatment (one pair for the whole table)."""
    pairs = {(r["baseline"], r["treatment"]) for r in rows} or {("add", "lape")}
    if len(pairs) > 1:
        raise ValueError(f"one table compares one pair of arms; these rows compare {sorted(pairs)}")
    ((b, t),) = pairs
    lines = [f"| dataset | model | PE | epochs | seeds | {b} | {t} | {t} − {b} (95 % CI) | p | paper add → lape |",
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
    if d is not None and d.get("no_spread"):
        return (f"{_where(row)}: every one of the {d['n']} paired seeds differs by the same {d['mean']:+.2f} points "
                f"({row['treatment']} − {row['baseline']}): no spread, so no interval or test.")
    if d is None or d["ci"] is None:
        return f"{row['model']} ({row['pe']}): too few paired seeds for an interval."
    lo, hi = d["ci"]
    b, t = row["baseline"], row["treatment"]
    interval = f"{t} − {b} = {d['mean']:+.2f} points, 95 % CI {lo:+.2f} to {hi:+.2f}, {d['n']} paired seeds"
    if lo > 0:
        said = f"{t} is better than {b} by {d['mean']:.2f} points ({interval})"
    elif hi < 0:
        said = f"{t} is worse than {b} by {-d['mean']:.2f} points ({interval})"
    else:
        said = (f"no difference between {t} and {b} is distinguishable from zero ({interval}): "
                f"not detected; the interval allows anything from {lo:+.2f} to {hi:+.2f} points")
    pub = row["published"]
    if pub:
        inside = lo <= pub["difference"] <= hi
        said += f"; the paper's {pub['difference']:+.2f} is {'inside' if inside else 'outside'} that interval"
    return f"{_where(row)}: {said}."


def write_figures(runs: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], prefix: str | Path,
                  multi: Sequence[Mapping[str, Any]] = ()) -> list[Path]:
    """Learning curves of every run, the per-seed differences and, for settings with factor steps,
    the steps from add to lape (``prefix``-factors*.png); PNG files named ``prefix``-*.png."""
    import matplotlib.pyplot as plt

    from .plotting import plot_factors, plot_history, plot_paired_differences

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
    with_factors = [row for row in multi if row["factors"]]
    for i, row in enumerate(with_factors):
        fig = plot_factors(row)
        written.append(prefix.with_name(f"{prefix.name}-factors{i if len(with_factors) > 1 else ''}.png"))
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m lape_lib.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="results.json files (or run folders) written by lape_lib.train")
    p.add_argument("--baseline", default="add", help="an arm label: a join or JOIN@STD (default add)")
    p.add_argument("--treatment", default="lape", help="an arm label (default lape)")
    p.add_argument("--out", help="write the comparison rows as JSON here")
    p.add_argument("--figures", help="write PNG figures with this path prefix")
    p.add_argument("--allow-unfinished", action="store_true", help="report runs that have not reached their last epoch")
    p.add_argument("--reference", default=None,
                   help="the arm every other arm is compared with in the multi-arm table (default: lape, where trained)")
    args = p.parse_args(argv)
    try:
        runs = load_results(args.runs)
        rows = compare(runs, args.baseline, args.treatment, allow_unfinished=args.allow_unfinished)
        reference = args.reference or "lape"
        multi = compare_arms(runs, reference, args.allow_unfinished) if args.reference or reference in arm_labels(runs) else []
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    print(markdown_table(rows))
    for row in rows:
        print(verdict(row))
    for row in multi:
        if len(row["arms"]) > 2:
            print(f"\n{_where(row)}: every arm against {row['reference']}")
            print(arms_table(row))
            if row["factors"]:
                print("\n" + factors_table(row))
            print(factors_verdict(row))
    try:
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            summary = {"rows": rows, "verdicts": [verdict(r) for r in rows], "arms": multi,
                       "factor_verdicts": [factors_verdict(r) for r in multi]}
            Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
            print(f"wrote {args.out}")
        if args.figures:
            for path in write_figures(runs, rows, args.figures, multi):
                print(f"wrote {path}")
    except OSError as err:
        raise SystemExit(f"error: cannot write {err.filename or args.out} ({err.strerror or err}); "
                         "give --out a file path and --figures a path prefix in writable folders") from None
    return rows


if __name__ == "__main__":
    main()
