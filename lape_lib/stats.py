"""The statistics of a paired comparison: differences over seeds with a Student-t interval and a
paired t-test, and Holm's correction across the factor steps of one comparison."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

ALPHA = 0.05  # the verdicts' significance level, after Holm's correction over a row's factor steps


def describe(values: Sequence[float]) -> dict[str, Any]:
    a = np.asarray(values, dtype=float)
    return {"n": len(a), "mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else None,
            "min": float(a.min()), "max": float(a.max())}


def paired_difference(treatment: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean of ``treatment - baseline`` over paired seeds, a Student-t interval and a paired t-test.

    With one pair there is no spread: the interval and p-value are None. Nor with pairs that all
    differ by the same amount (``no_spread``: a std at rounding level, which a t-test would turn
    into an absurdly small p): there is nothing to test against.
    """
    from scipy import stats

    if len(treatment) != len(baseline) or not treatment:
        raise ValueError(f"paired samples need equal, non-zero lengths; got {len(treatment)} and {len(baseline)}")
    d = np.asarray(treatment, dtype=float) - np.asarray(baseline, dtype=float)
    out: dict[str, Any] = {"n": len(d), "mean": float(d.mean()), "std": None, "ci": None, "confidence": confidence,
                           "t": None, "p_value": None, "per_seed": d.tolist()}
    if len(d) > 1:
        sd = float(d.std(ddof=1))
        if sd <= 1e-9 * max(1.0, abs(out["mean"])):
            out.update(std=0.0, no_spread=True)
            return out
        half = float(stats.t.ppf(0.5 + confidence / 2, len(d) - 1)) * sd / math.sqrt(len(d))
        out.update(std=sd, ci=[out["mean"] - half, out["mean"] + half])
        if sd > 0:
            test = stats.ttest_rel(np.asarray(treatment, dtype=float), np.asarray(baseline, dtype=float))
            out.update(t=float(test.statistic), p_value=float(test.pvalue))
    return out


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and is not counted in the family).

    The k-th smallest of m p-values is multiplied by m − k + 1, then made non-decreasing; an
    adjusted p below α rejects with a family-wise error rate of at most α.
    """
    known = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for k, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - k) * p))
        out[i] = running
    return out
