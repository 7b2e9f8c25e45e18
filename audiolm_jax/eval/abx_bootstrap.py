"""Confidence intervals for ABX errors: a bootstrap over triphone contexts, one for all features.

The unit resampled is the context ("left+right"): groups of one context share items and are not
independent, groups of different contexts share none. A replicate draws the contexts with
replacement and recomputes each feature's error by the same nested averaging as `abx.abx_error`
(`abx.LEVELS`), a context drawn k times weighing k times at the first stage. The same draws serve
every feature, so the difference of two features' errors gets a *paired* interval: both are
recomputed on the same contexts, and what the contexts share (some triphones are hard for every
feature) cancels. Deterministic in `seed`.

    draws = context_draws(contexts, replicates=1000, seed=0)
    errors = replicate_errors(result.scores["across"], abx.LEVELS["across"], draws, contexts)
    interval(errors)   # [lo, hi] of the 95% percentile interval
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def context_draws(contexts: Sequence[str], replicates: int = 1000, seed: int = 0) -> np.ndarray:
    """int [replicates, len(contexts)]: how often each context is drawn in each replicate."""
    if replicates < 1 or not contexts:
        raise ValueError(f"need >= 1 replicate and >= 1 context, got {replicates}, "
                         f"{len(contexts)}")
    n = len(contexts)
    return np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=replicates)


def _group(keys: Sequence[tuple], drop: Sequence[int]) -> tuple[list[tuple], np.ndarray]:
    """(the distinct keys without the positions `drop`, sorted; each key's index among them)."""
    reduced = [tuple(v for p, v in enumerate(k) if p not in drop) for k in keys]
    distinct = sorted(set(reduced))
    where = {k: i for i, k in enumerate(distinct)}
    return distinct, np.array([where[k] for k in reduced], np.int64)


def _sum_by(values: np.ndarray, index: np.ndarray, groups: int) -> np.ndarray:
    """[R, groups]: row-wise sums of values [R, K] over the columns of each group."""
    rows = values.shape[0]
    flat = (index[None, :] + groups * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, weights=values.ravel(), minlength=rows * groups).reshape(rows, groups)


def replicate_errors(scores: Mapping[tuple, float], levels: Sequence[Sequence[int]],
                     draws: np.ndarray, contexts: Sequence[str]) -> np.ndarray:
    """[R] errors of one feature, one per replicate of `draws` (columns in `contexts` order).

    scores: {group key: error} with the context at key position 0 (`AbxResult.scores[c]`);
    levels: the key positions averaged at each stage (`abx.LEVELS[c]`), the first including 0.
    A replicate with no context of this feature drawn gives NaN.
    """
    if not scores:
        return np.full(draws.shape[0], np.nan)
    if 0 not in levels[0]:
        raise ValueError(f"the first averaging stage must include the context (0): {levels}")
    column = {c: i for i, c in enumerate(contexts)}
    keys = list(scores)
    weights = draws[:, [column[k[0]] for k in keys]].astype(np.float64)       # [R, K]
    values = np.array([scores[k] for k in keys])
    # Stage 1: context-weighted means; later stages: plain means over what was drawn.
    positions = list(range(len(keys[0])))
    distinct, index = _group(keys, levels[0])
    total = _sum_by(weights, index, len(distinct))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = _sum_by(weights * values, index, len(distinct)) / total
    present = total > 0
    positions = [p for p in positions if p not in levels[0]]
    keys = distinct
    for level in levels[1:]:
        drop = [k for k, p in enumerate(positions) if p in level]
        distinct, index = _group(keys, drop)
        count = _sum_by(present.astype(np.float64), index, len(distinct))
        with np.errstate(invalid="ignore", divide="ignore"):
            means = _sum_by(np.where(present, means, 0.0), index, len(distinct)) / count
        present = count > 0
        positions = [p for p in positions if p not in level]
        keys = distinct
    count = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present, means, 0.0).sum(axis=1) / np.where(count > 0, count, np.nan)


def interval(replicates: np.ndarray, level: float = 0.95) -> list[float] | None:
    """[lo, hi]: the percentile interval of the finite replicates (None if there are none)."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return None
    tail = (1.0 - level) / 2 * 100
    return [float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))]
