"""Mixed-precision pieces of the LM's training step that autodiff alone gets slow.

`einsum_f32_out`: the output projection wants f32 logits from bf16 operands (cuBLAS accumulates
in f32 and writes f32), but autodiff then hands an f32 cotangent to its two backward matmuls,
which promote their bf16 operands and run as f32/TF32 GEMMs: 6.1 of the 175 ms of a paper-size
stage-2 training step on an H100 (results/lm_step_profile_toeplitz_bias.json,
`sm90_xmma_gemm_f32f32_tf32f32...`). Here the cotangent is cast to the operands' dtype first, so
the backward matmuls run in bf16 like every other matmul of the step: the softmax gradient is
rounded to bf16, as it would be had the logits been bf16.

`dropout`: inverted dropout from 16 random bits per element instead of `jax.random.bernoulli`'s
32 (threefry or rbg then computes half the bits; the masks were the step's largest elementwise
fusions). The drop probability is round(rate * 2^16) / 2^16, within 8e-6 of `rate`, and the
kept values are scaled by the exact inverse keep probability, so the mean is preserved.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

_DROPOUT_LEVELS = 2 ** 16


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def einsum_f32_out(spec: str, x: jax.Array, w: jax.Array) -> jax.Array:
    """`jnp.einsum(spec, x, w)` with an f32 result; the backward runs in x's and w's dtype."""
    return jnp.einsum(spec, x, w, preferred_element_type=jnp.float32)


def _einsum_fwd(spec, x, w):
    return einsum_f32_out(spec, x, w), (x, w)


def _einsum_bwd(spec, residuals, cotangent):
    x, w = residuals
    _, pullback = jax.vjp(lambda a, b: jnp.einsum(spec, a, b), x, w)
    return pullback(cotangent.astype(jnp.result_type(x, w)))


einsum_f32_out.defvjp(_einsum_fwd, _einsum_bwd)


def dropout_keep_probability(rate: float) -> float:
    """The keep probability `dropout` realises for `rate` (a multiple of 2^-16)."""
    return 1.0 - round(rate * _DROPOUT_LEVELS) / _DROPOUT_LEVELS


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; identity when `key` is None (evaluation) or `rate` is 0."""
    if key is None or rate == 0.0:
        return x
    drop_below = round(rate * _DROPOUT_LEVELS)
    keep = jax.random.bits(key, x.shape, jnp.uint16) >= drop_below
    # The scale in f32 (a bf16 1/0.9 is 0.2% off); XLA fuses the casts into the mask's loop.
    scaled = (x.astype(jnp.float32) / dropout_keep_probability(rate)).astype(x.dtype)
    return jnp.where(keep, scaled, jnp.zeros_like(x))
