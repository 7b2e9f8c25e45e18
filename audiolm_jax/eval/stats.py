"""Confidence intervals for the evaluation tables: Wilson for accuracies, bootstrap for means and
ratios (corpus WER), both at 95% by default and deterministic in their seed.

Every figure in `results/eval_*.json` is stored as `{"value", "ci95": [lo, hi], "n"}` (see
`accuracy_summary`, `mean_summary`), so a table row is one lookup.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Sequence

import numpy as np


def z_score(confidence: float = 0.95) -> float:
    """Two-sided normal quantile: 1.96 for 95%."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence}; use a level in (0, 1), e.g. 0.95")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion `successes / n` (ties counted as 0.5 are fine).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0/n and n/n, which
    small evaluation sets (tens of utterances) hit often. (nan, nan) for n = 0.
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"wilson_interval: need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return math.nan, math.nan
    z = z_score(confidence)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values`; (nan, nan) for none, (v, v) for one."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def bootstrap_ratio_ci(numerators: Sequence[float], denominators: Sequence[float],
                       confidence: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of sum(numerators) / sum(denominators), resampling items.

    Corpus WER is a ratio (errors over reference words, summed over utterances), not a mean of
    per-utterance WERs, so utterances are resampled and the ratio recomputed.
    """
    num, den = np.asarray(numerators, np.float64), np.asarray(denominators, np.float64)
    if num.shape != den.shape:
        raise ValueError(f"bootstrap_ratio_ci: {num.size} numerators but {den.size} denominators")
    if num.size == 0 or den.sum() <= 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num.size, size=(resamples, num.size))
    ratios = num[idx].sum(axis=1) / np.maximum(den[idx].sum(axis=1), 1e-12)
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1.0 - alpha))


def accuracy_summary(correct: Sequence[float], confidence: float = 0.95) -> dict:
    """{"value": accuracy, "ci95": Wilson [lo, hi], "n", "correct"} from 0/1 (or 0.5 tie) scores."""
    x = np.asarray(correct, np.float64)
    n, k = int(x.size), float(x.sum())
    return {"value": k / n if n else math.nan, "ci95": list(wilson_interval(k, n, confidence)),
            "n": n, "correct": k}


def mean_summary(values: Sequence[float], seed: int = 0, confidence: float = 0.95) -> dict:
    """{"value": mean, "ci95": bootstrap [lo, hi], "n"}."""
    x = np.asarray(values, np.float64)
    return {"value": float(x.mean()) if x.size else math.nan,
            "ci95": list(bootstrap_ci(x, confidence, seed=seed)), "n": int(x.size)}
