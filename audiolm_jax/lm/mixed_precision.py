"""The LM's output projection in mixed precision, which autodiff alone gets slow.

`einsum_f32_out`: the output projection wants f32 logits from bf16 operands (cuBLAS accumulates
in f32 and writes f32), but autodiff then hands an f32 cotangent to its two backward matmuls,
which promote their bf16 operands and run as f32/TF32 GEMMs: 6.1 of the 175 ms of a paper-size
stage-2 training step on an H100 (results/lm_step_profile_toeplitz_bias.json,
`sm90_xmma_gemm_f32f32_tf32f32...`). Here the cotangent is cast to the operands' dtype first, so
the backward matmuls run in bf16 like every other matmul of the step: the softmax gradient is
rounded to bf16, as it would be had the logits been bf16.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


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
