"""Span masking of w2v-BERT's 25 Hz features (as wav2vec 2.0, which w2v-BERT follows).

Every valid frame starts a span with probability `mask_prob` (0.065); a span masks `span` (10)
consecutive frames, i.e. 400 ms at 25 Hz. Spans may overlap and are cut at the end of the valid
region, so about 1 - (1 - p)^span ~ 49% of interior frames are masked (`expected_mask_fraction`
gives the exact figure for a length). An utterance that draws no start gets one start at a random
valid frame, so the contrastive and MLM losses always see at least one masked span.

Deterministic in the key; jit-able; shapes are static.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.semantic import draws


def span_mask(key: jax.Array, shape: tuple[int, int], mask_prob: float = 0.065, span: int = 10,
              valid: jnp.ndarray | None = None) -> jnp.ndarray:
    """Random span mask.

    Args:
      key: PRNG key; the same key gives the same mask.
      shape: (batch, frames).
      mask_prob: probability that a frame starts a span.
      span: frames per span.
      valid: bool [batch, frames], False on padding (never masked, never a start); None: all valid.
    Returns:
      bool [batch, frames], True where masked.
    """
    if not 0.0 <= mask_prob <= 1.0 or span < 1:
        raise ValueError(f"span_mask: need 0 <= mask_prob <= 1 and span >= 1, got "
                         f"mask_prob={mask_prob}, span={span}")
    batch, frames = shape
    if valid is None:
        valid = jnp.ones(shape, bool)
    start_key, fallback_key = jax.random.split(key)
    starts = draws.bernoulli(start_key, mask_prob, shape) & valid
    # Fallback start for utterances that drew none: a uniform valid frame.
    n_valid = valid.sum(-1)
    pick = draws.randint(fallback_key, (batch,), jnp.maximum(n_valid, 1))
    valid_rank = jnp.cumsum(valid, axis=-1) - 1
    fallback = valid & (valid_rank == pick[:, None]) & ~starts.any(-1, keepdims=True)
    starts = starts | fallback
    # Frame t is masked iff a span started in (t - span, t]: a windowed count of starts.
    count = jnp.cumsum(starts.astype(jnp.int32), axis=-1)
    lagged = jnp.pad(count, ((0, 0), (span, 0)))[:, :frames]
    return ((count - lagged) > 0) & valid


def expected_mask_fraction(frames: int, mask_prob: float = 0.065, span: int = 10) -> float:
    """Mean masked fraction of an utterance of `frames` valid frames (ignoring the rare fallback).

    Frame t (0-based) is covered by the min(t + 1, span) possible starts before it.
    """
    t = np.arange(frames)
    return float(np.mean(1.0 - (1.0 - mask_prob) ** np.minimum(t + 1, span)))
