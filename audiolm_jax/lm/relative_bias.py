"""T5 bucketed relative position bias (Raffel et al. 2020, sec. 2.1), causal variant.

Each (query, key) offset is mapped to one of `num_buckets` buckets: small offsets get a bucket
each, larger ones share logarithmically wider buckets up to `max_distance`, beyond which all
offsets share the last bucket. Every head learns one scalar per bucket, added to the attention
logits. As in T5, one bias table serves every layer of the stack (it is computed once per call
and passed down), so the model holds `num_buckets * num_heads` position parameters in total.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from audiolm_jax.lm.params import logical_param


def relative_position_bucket(relative_position: jax.Array, *, bidirectional: bool = False,
                             num_buckets: int = 32, max_distance: int = 128) -> jax.Array:
    """Bucket index of `key_position - query_position`, as T5 defines it.

    Args:
      relative_position: int array of any shape, `key_position - query_position`.
      bidirectional: False for a decoder: keys after the query (positive offsets) all fall in
        bucket 0, which the causal mask hides anyway.
    Returns:
      int32 array of the same shape, values in [0, num_buckets).
    """
    distance = -jnp.asarray(relative_position, jnp.int32)  # how far back the key lies
    bucket = jnp.zeros_like(distance)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (distance < 0).astype(jnp.int32) * num_buckets
        distance = jnp.abs(distance)
    else:
        distance = jnp.maximum(distance, 0)
    max_exact = num_buckets // 2
    # Float32 log as in T5 so bucket edges match checkpoints trained with it; eps avoids log(0)
    # for the distances that take the exact branch anyway.
    scaled = (jnp.log(distance.astype(jnp.float32) / max_exact + np.finfo(np.float32).eps)
              / np.log(max_distance / max_exact) * (num_buckets - max_exact))
    log_bucket = jnp.minimum(max_exact + scaled.astype(jnp.int32), num_buckets - 1)
    return bucket + jnp.where(distance < max_exact, distance, log_bucket)


def toeplitz_square(row: jax.Array, length: int) -> jax.Array:
    """[heads, 2L - 1] values at key - query = -(L - 1) .. L - 1 -> [heads, L, L] with
    [h, i, j] = row[h, j - i + L - 1].

    Laid out with the "skew" of Transformer-XL's relative shift: L copies of the row,
    flattened, read from offset L - 1 with a row stride of 2L - 2, so row i starts at offset
    value -i. No gather: its gradient is a pad, a reshape and a sum over the copies.
    """
    heads = row.shape[0]
    copies = jnp.tile(row, (1, length))                                     # [H, L (2L - 1)]
    stride = max(2 * length - 2, 1)
    skewed = copies[:, length - 1:length - 1 + length * stride]
    return skewed.reshape(heads, length, stride)[:, :, :length]


def band_far_square(band: jax.Array, far: jax.Array, length: int) -> jax.Array:
    """The causal T5 bias [heads, L, L] from `RelativePositionBias.split()`'s (band, far):
    band[h, i - j] for 0 <= i - j < width, far[h] beyond; keys after the query (masked by
    causality) get band[h, 0], as the bucketed table gives them."""
    width = band.shape[1]
    distance = -jnp.arange(-(length - 1), length)                           # query - key
    row = jnp.where(distance < width, jnp.take(band, jnp.clip(distance, 0, width - 1), axis=1),
                    far[:, None])
    return toeplitz_square(row, length)


class RelativePositionBias(nnx.Module):
    """Learned per-head bias over relative-position buckets; shared by all layers."""

    def __init__(self, num_heads: int, *, num_buckets: int = 32, max_distance: int = 128,
                 rngs: nnx.Rngs):
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        # [heads, buckets]: t5x's layout and logical names, so its rules shard it by heads.
        self.embedding = logical_param(
            rngs, nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
            (num_heads, num_buckets), ("heads", "relpos_buckets"))

    def __call__(self, query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
        """Bias for every (query, key) pair.

        Args:
          query_positions: int [queries] absolute positions of the queries.
          key_positions: int [keys] absolute positions of the keys.
        Returns:
          float32 [heads, queries, keys].
        """
        return self._gather(key_positions[None, :] - query_positions[:, None])

    def square(self, length: int) -> jax.Array:
        """float32 [heads, length, length]: `self(arange(length), arange(length))`, built so its
        gradient needs no large scatter.

        The bias depends only on the offset j - i, so it is a Toeplitz matrix of the 2L - 1
        per-offset values. Gathering [H, L, L] from the bucket table directly (as `__call__`
        does) makes the backward pass a scatter-add of H * L^2 values into H * 32 buckets:
        17 ms per step for the paper's stage 2 on an H200, 9% of the step. Here the per-offset
        row is gathered (2L - 1 values: a tiny scatter backwards) and laid out by
        `toeplitz_square`, whose gradient is a pad, a reshape and a sum.
        """
        return toeplitz_square(self._gather(jnp.arange(-(length - 1), length)), length)

    def split(self) -> tuple[jax.Array, jax.Array]:
        """(band [heads, max_distance], far [heads]) in float32: the bias of offsets
        0 .. max_distance - 1 (query minus key), and of every larger offset, which all fall in
        the last bucket (`split_attention` relies on that)."""
        band = self._gather(-jnp.arange(self.max_distance))
        return band, self.embedding[...][:, self.num_buckets - 1].astype(jnp.float32)

    def _gather(self, relative: jax.Array) -> jax.Array:
        buckets = relative_position_bucket(relative, bidirectional=False,
                                           num_buckets=self.num_buckets,
                                           max_distance=self.max_distance)
        # A gather over the tiny [heads, buckets] table; XLA turns its gradient into a
        # scatter-add. (A one-hot einsum would materialise [..., buckets].)
        return jnp.take(self.embedding[...].astype(jnp.float32), buckets, axis=1)
