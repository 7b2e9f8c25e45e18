"""Per-dimension standardisation of w2v-BERT activations, with statistics streamed over a dataset.

AudioLM normalises each embedding dimension to zero mean and unit variance before k-means (it
"significantly improves phonetic discriminability"). The statistics are accumulated batch by
batch in float64 on the host with Chan et al.'s parallel merge of (count, mean, M2), which is exact
up to rounding whatever the batch sizes and order, and never stores the dataset. Partial results
from several hosts or workers merge the same way (`merge_moments`).
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class Moments(NamedTuple):
    count: float  # number of vectors seen
    mean: np.ndarray  # float64 [dim]
    m2: np.ndarray  # float64 [dim]: sum of squared deviations from the mean


def empty_moments(dim: int) -> Moments:
    return Moments(0.0, np.zeros(dim), np.zeros(dim))


def batch_moments(x, valid=None) -> Moments:
    """Moments of the vectors in x [..., dim]; `valid` bool [...] keeps only some (e.g. no padding)."""
    x = np.asarray(x, np.float64)
    x = x.reshape(-1, x.shape[-1])
    if valid is not None:
        x = x[np.asarray(valid, bool).reshape(-1)]
    if x.shape[0] == 0:
        return empty_moments(x.shape[-1])
    mean = x.mean(0)
    return Moments(float(x.shape[0]), mean, ((x - mean) ** 2).sum(0))


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Chan et al. (1979) pairwise merge."""
    n = a.count + b.count
    if n == 0:
        return a
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + delta ** 2 * (a.count * b.count / n)
    return Moments(n, mean, m2)


def update_moments(m: Moments, x, valid=None) -> Moments:
    """m merged with the vectors of x [..., dim]."""
    return merge_moments(m, batch_moments(x, valid))


def mean_and_std(m: Moments, min_std: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """float32 mean [dim] and population std [dim] (floored: a dead dimension must not blow up)."""
    if m.count == 0:
        raise ValueError("mean_and_std: no vectors were accumulated; feed at least one batch")
    std = np.sqrt(m.m2 / m.count)
    return m.mean.astype(np.float32), np.maximum(std, min_std).astype(np.float32)


def standardize(x: jnp.ndarray, mean: jnp.ndarray, std: jnp.ndarray) -> jnp.ndarray:
    """(x - mean) / std over the last axis; x [..., dim] (jit-able)."""
    return (x - mean) / std
