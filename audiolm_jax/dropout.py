"""Inverted dropout whose mask is an integer hash of each element's index and the key.

Why not `jax.random` bits: XLA materialises them (threefry's pairs of words, or rbg's
RngBitGenerator) and reads them back into the fusion that applies the mask, and autodiff then
saves the boolean mask for the backward pass. The LM's dropout sites (embedding, attention and
feed-forward outputs, the 4x wider feed-forward hidden) made the masks the step's largest
elementwise fusions: dropout off saved 6% of a paper-size stage-2 step on an H200
(results/lm_step_profile.json, 191 -> 180 ms). Here the mask bit of element i is the low 16 bits
of two rounds of a 32-bit integer mixer over (i, key): a few integer ops that XLA computes inside
the fusion using them, and the backward pass recomputes them (a custom VJP) instead of saving the
mask. On the 2-core CPU, fwd+bwd of dropout on 8 x 512 x 4096 bf16: 269 ms with 16-bit threefry
bits, 16 ms hashed; XLA's bytes accessed 1.0 GB -> 67 MB.

The mask depends only on the key and the element's position in the global array, so a sharded
step draws the same mask as an unsharded one. The drop probability is round(rate * 2^16) / 2^16,
within 8e-6 of `rate`; kept values are scaled by the exact inverse keep probability (in f32: a
bf16 1/0.9 is 0.2% off), so the mean is preserved.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_LEVELS = 2 ** 16
_GOLDEN = 0x9E3779B9     # odd: multiplying the leading index by it is a bijection mod 2^32


def keep_probability(rate: float) -> float:
    """The keep probability `dropout` realises for `rate` (a multiple of 2^-16)."""
    return 1.0 - round(rate * _LEVELS) / _LEVELS


def _mix(x: jax.Array) -> jax.Array:
    """A bijective 32-bit mixer (xor-shift / multiply, the "lowbias32" constants)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _key_words(key: jax.Array) -> jax.Array:
    """A typed key's (threefry, rbg) or a legacy uint32 key's words, flat uint32."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return jnp.ravel(key).astype(jnp.uint32)


def hashed_bits(words: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 pseudo-random bits of `shape` from key words: the last axis's index and the
    leading axes' linear index each enter one mixing round, so arrays of up to 2^32 rows of up
    to 2^32 elements get no repeated (index, key) input."""
    column = jax.lax.broadcasted_iota(jnp.uint32, shape, len(shape) - 1)
    row = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape) - 1)):
        row = row + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
        stride = (stride * shape[axis]) % 2 ** 32
    first = _mix(column ^ words[0])
    return _mix(first ^ (row * jnp.uint32(_GOLDEN)) ^ words[-1])


def _apply(x: jax.Array, rate: float, words: jax.Array) -> jax.Array:
    keep = (hashed_bits(words, x.shape) & jnp.uint32(_LEVELS - 1)) >= round(rate * _LEVELS)
    scaled = (x.astype(jnp.float32) / keep_probability(rate)).astype(x.dtype)
    return jnp.where(keep, scaled, jnp.zeros_like(x))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _dropout(x: jax.Array, rate: float, words: jax.Array) -> jax.Array:
    return _apply(x, rate, words)


def _dropout_fwd(x, rate, words):
    return _apply(x, rate, words), words


def _dropout_bwd(rate, words, cotangent):
    # d(mask * x / keep) / dx applied to the cotangent: the same mask, recomputed, not stored.
    return _apply(cotangent, rate, words), None


_dropout.defvjp(_dropout_fwd, _dropout_bwd)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; identity when `key` is None (evaluation) or `rate` is 0.

    Args:
      x: a floating array of any shape.
      rate: the drop probability in [0, 1).
      key: a typed (`jax.random.key`) or legacy uint32 key; one key per call site (split it),
        as masks from one key and one shape are equal.
    """
    if key is None or rate <= 0.0:
        return x
    if not 0.0 < rate < 1.0:
        raise ValueError(f"dropout: rate must lie in [0, 1), got {rate}")
    return _dropout(x, float(rate), _key_words(key))
