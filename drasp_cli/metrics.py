"""MOS prediction metrics at clip and system level: MSE, LCC, SRCC, KTAU (scipy), with
bootstrap 95% intervals for SRCC.

System level follows the paper's protocol (Cooper et al. 2022): a system's predicted and human
scores are the means over its clips, and the metrics compare those means across systems.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

METRICS = ("MSE", "LCC", "SRCC", "KTAU")


def correlations(pred: Sequence[float], true: Sequence[float]) -> dict[str, float]:
    """MSE, Pearson LCC, Spearman SRCC and Kendall tau-b of two equally long sequences.

    Correlations are NaN when fewer than two points or a constant sequence make them undefined.

    >>> m = correlations([1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 3.5, 3.9])
    >>> round(m["MSE"], 4), m["SRCC"], round(m["KTAU"], 3)
    (0.1275, 1.0, 1.0)
    """
    from scipy import stats

    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 1:
        raise ValueError(f"pred and true must be 1-D and equally long, got {p.shape} and {t.shape}")
    out = {"MSE": float(np.mean((p - t) ** 2)) if p.size else math.nan}
    if p.size < 2 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return {**out, "LCC": math.nan, "SRCC": math.nan, "KTAU": math.nan}
    out["LCC"] = float(stats.pearsonr(p, t).statistic)
    out["SRCC"] = float(stats.spearmanr(p, t).statistic)
    out["KTAU"] = float(stats.kendalltau(p, t).statistic)
    return out


def srcc_interval(pred: Sequence[float], true: Sequence[float], n_resamples: int = 1000, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap 95% interval of SRCC, resampling (pred, true) pairs."""
    from scipy import stats

    p, t = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if n_resamples <= 0 or p.size < 4 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return None

    def srcc(a, b):
        return stats.spearmanr(a, b).statistic

    with warnings.catch_warnings():
        # Resamples with tied or constant values are expected with few systems; they count as NaN.
        warnings.simplefilter("ignore")
        res = stats.bootstrap(
            (p, t), srcc, paired=True, vectorized=False, n_resamples=n_resamples, method="percentile",
            rng=np.random.default_rng(seed),
        )
    lo, hi = res.confidence_interval
    return (float(lo), float(hi)) if np.isfinite(lo) and np.isfinite(hi) else None


def system_means(systems: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    """Mean of ``values`` per system."""
    sums: dict[str, list[float]] = {}
    for s, v in zip(systems, values):
        sums.setdefault(s, []).append(v)
    return {s: float(np.mean(v)) for s, v in sums.items()}


def evaluate(
    pred: dict[str, Sequence[float]],
    true: dict[str, Sequence[float]],
    systems: Sequence[str | None],
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Clip- and system-level metrics per axis.

    ``pred`` and ``true`` map each axis to per-clip values (NaN where a clip has no value for
    that axis); ``systems`` names each clip's system (None: left out of the system level).
    Returns ``{"clip": {axis: metrics}, "system": {axis: metrics + SRCC_CI95}, "points": {axis:
    [[system, predicted mean, human mean], ...]}, "n_clips", "n_systems"}``.
    """
    out: dict[str, Any] = {"clip": {}, "system": {}, "points": {}}
    n_sys = 0
    for axis, p in pred.items():
        p, t = np.asarray(p, np.float64), np.asarray(true[axis], np.float64)
        ok = np.isfinite(p) & np.isfinite(t)
        clip = correlations(p[ok], t[ok])
        clip["n"] = int(ok.sum())
        out["clip"][axis] = clip
        keep = [i for i in np.flatnonzero(ok) if systems[i] is not None]
        names = [systems[i] for i in keep]
        mp, mt = system_means(names, p[keep]), system_means(names, t[keep])
        order = sorted(mp)
        sp, st = [mp[s] for s in order], [mt[s] for s in order]
        system = correlations(sp, st)
        system["n"] = len(order)
        system["SRCC_CI95"] = srcc_interval(sp, st, n_resamples, seed)
        out["system"][axis] = system
        out["points"][axis] = [[s, mp[s], mt[s]] for s in order]
        n_sys = max(n_sys, len(order))
    out["n_clips"] = len(systems)
    out["n_systems"] = n_sys
    return out


def evaluate_records(records: list[dict[str, Any]], examples, axes: tuple[str, ...], n_resamples: int = 1000) -> dict[str, Any]:
    """Metrics of score records (``{"path", "key"?, "scores"}``, as ``drasp score`` writes them)
    against labelled examples, matched by clip key. Examples without a record are counted as
    missing, not silently dropped."""
    by_key = {r.get("key", r["path"]): r for r in records}
    pred: dict[str, list[float]] = {a: [] for a in axes}
    true: dict[str, list[float]] = {a: [] for a in axes}
    systems, missing = [], []
    for ex in examples:
        rec = by_key.get(ex.clip.key)
        if rec is None:
            missing.append(ex.clip.key)
            continue
        systems.append(ex.clip.system)
        for a in axes:
            value = rec["scores"].get(a)
            pred[a].append(math.nan if value is None else float(value))
            true[a].append(float(ex.labels.get(a, math.nan)))
    result = evaluate(pred, true, systems, n_resamples=n_resamples)
    result["missing"] = missing
    return result
