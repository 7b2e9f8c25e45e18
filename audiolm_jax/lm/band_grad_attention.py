"""Causal flash attention with the T5 bias, whose bias gradient comes from a band of offsets.

cuDNN's flash kernels take an additive bias and, in the backward pass, return its gradient as
a full [heads, T, T] square summed over the batch; that bias-gradient output is what makes the
biased kernel ~4x slower than the unbiased one at stage 2's shape (docs/RESULTS.md, issue #7).
The model never needs that square: its bias is a T5 table, a value `band[h, o]` for each offset
o = query - key below `width` (= the bucketing's max_distance) and one value `far[h]` beyond.
So this path runs the kernel's backward pass *without* the bias gradient and computes the
table's gradient itself:

  d band[h, o] = sum over batch and queries i of dS[b, h, i, i - o]     (0 <= o < width)
  d far[h]     = - sum over o of d band[h, o]

where dS = P * (dP - D) is the gradient of the logits (P the softmax weights, dP = dO V^T,
D_i = dO_i . O_i). The second line holds because every softmax row's logit gradients sum to
zero: sum over j of P_ij (dP_ij - D_i) = D_i - D_i. Only dS on the band is needed, and P there
is exp(logits - lse) with the log-normaliser lse the forward kernel returns anyway. The band is
computed in blocks of queries (`width` by default) against the `width` keys before each block
and its own (the windows of `split_attention`), (width + block) / T of the attention's work.

On GPUs the forward and the bias-free backward are cuDNN's (`lm.cudnn_private`: jax's private
entry point with the bias-gradient output switched off; a jax whose private entry point
differs gets the public one, bias gradient and all); elsewhere an exact XLA attention in f32
stands in, so the CPU tests check the same gradient arithmetic.

Shapes as in `attention`: query/key/value [batch, length, heads, head_dim]; band [heads,
width]; far [heads].
"""
from __future__ import annotations

import logging
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.lm import cudnn_private
from audiolm_jax.lm.relative_bias import band_far_square
from audiolm_jax.lm.split_attention import band_blocks, band_logits, band_windows


def check_band_block(caller: str, block: int | None, width: int) -> None:
    """`band_bias_gradient`'s query blocks must divide the band: refused up front, not when the
    backward pass is traced."""
    if block is not None and (block < 1 or width % block):
        raise ValueError(f"{caller}: block={block} must divide the band width {width}")


def band_score_gradient(query: jax.Array, key: jax.Array, value: jax.Array, out: jax.Array,
                        lse: jax.Array, d_out: jax.Array, band: jax.Array, scale: float,
                        block: int | None = None) -> tuple[jax.Array, jax.Array]:
    """(p, d_s), f32 [batch, blocks, heads, block, width + block] each: the softmax weights and
    the logits' gradient dS = P * (dP - D) on the band, each block of queries against its
    window (`split_attention.band_windows`); zeros outside the band.

    Args:
      query, key, value, out, d_out: [batch, length, heads, head_dim] (out: the attention's
        output, d_out: the loss's gradient in it).
      lse: [batch, heads, length] f32 log-normaliser of each query's biased, scaled logits.
      band: [heads, width] the bias at offsets 0 .. width - 1.
      block: queries per block (default `width`; a divisor of it): each block meets the width +
        block keys ending at its last query, so smaller blocks waste less of that window (and
        give the matrix products fewer rows).
    """
    width = band.shape[1]
    block = block or width
    logits = band_logits(query, key, band, scale, block)               # [b, n, h, r, c]
    # d_out against the windows of values: dP on the same (block, window) grid.
    d_p = jnp.einsum("bnqhd,bnkhd->bnhqk", band_blocks(d_out, block),
                     band_windows(value, width, block), preferred_element_type=jnp.float32)
    lse = band_blocks(jnp.moveaxis(lse, 1, 2), block)                  # [b, n, r, h]
    delta = band_blocks(jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), -1), block)
    lse, delta = jnp.moveaxis(lse, 3, 2)[..., None], jnp.moveaxis(delta, 3, 2)[..., None]
    p = jnp.exp(logits - lse)                                          # 0 outside the band
    return p, p * (d_p - delta)


def band_table_gradient(d_s: jax.Array, width: int) -> jax.Array:
    """d loss / d band [heads, width] from `band_score_gradient`'s d_s: the sum over batch,
    blocks and queries of the logit gradient at each offset."""
    block = d_s.shape[3]
    d_s = jnp.sum(d_s, axis=(0, 1))                                    # [h, r, c]
    # Offset o of query r sits at window key c = r + width - o.
    columns = width + jnp.arange(block)[:, None] - jnp.arange(width)[None]   # [r, o]
    return jnp.sum(jnp.take_along_axis(d_s, columns[None], axis=2), axis=1)


def band_bias_gradient(query: jax.Array, key: jax.Array, value: jax.Array, out: jax.Array,
                       lse: jax.Array, d_out: jax.Array, band: jax.Array, scale: float,
                       block: int | None = None) -> jax.Array:
    """d loss / d band [heads, width] (f32) from the attention's residuals (arguments as
    `band_score_gradient`'s)."""
    _, d_s = band_score_gradient(query, key, value, out, lse, d_out, band, scale, block)
    return band_table_gradient(d_s, band.shape[1])


def xla_attention(query, key, value, bias, scale):
    """(out, lse [b, h, L] f32): exact causal attention with f32 logits and softmax."""
    from audiolm_jax.lm.attention import causal_mask, reference_logits  # imports this module
    positions = jnp.arange(query.shape[1])
    logits = reference_logits(query, key, bias, causal_mask(positions, positions), scale)
    lse = jax.nn.logsumexp(logits, axis=-1)
    weights = jnp.exp(logits - lse[..., None]).astype(value.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, value), lse


def _public_attention(query, key, value, bias, scale, implementation="cudnn"):
    """(out, lse) through the public API, for a jax whose private entry point differs: cuDNN
    then computes the bias gradient too (and it is dropped), and the public API hands the
    log-normaliser back [b, L, h] in the compute dtype (bf16: the band's weights within ~3%)."""
    out, lse = jax.nn.dot_product_attention(query, key, value, bias=bias.astype(query.dtype),
                                            scale=scale, is_causal=True,
                                            implementation=implementation, return_residual=True)
    return out, jnp.moveaxis(lse, 2, 1).astype(jnp.float32)


def _kernel(query):
    from audiolm_jax.lm.attention import cudnn_supported   # attention imports this module
    if not cudnn_supported(query, query):
        return xla_attention
    if cudnn_private.available():
        return cudnn_private.attention      # cuDNN wants even lengths with a bias: padded below
    logging.warning("band_grad_attention: jax %s's private cuDNN attention has another signature; "
                    "using the public one, which also computes the bias gradient (slower)",
                    jax.__version__)
    return _public_attention


@partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _attention(query, key, value, band, far, scale, block):
    return _attention_forward(query, key, value, band, far, scale, block)[0]


def _attention_forward(query, key, value, band, far, scale, block):
    bias = band_far_square(band, far, query.shape[1])[None]
    kernel = _kernel(query)
    (out, lse), kernel_vjp = jax.vjp(lambda q, k, v: kernel(q, k, v, bias, scale), query, key, value)
    return out, (kernel_vjp, query, key, value, out, lse, band, far)


def _attention_backward(scale, block, residuals, d_out):
    kernel_vjp, query, key, value, out, lse, band, far = residuals
    d_query, d_key, d_value = kernel_vjp((d_out, jnp.zeros_like(lse)))
    d_band = band_bias_gradient(query, key, value, out, lse, d_out, band, scale, block)
    d_far = -jnp.sum(d_band, axis=1)
    return d_query, d_key, d_value, d_band.astype(band.dtype), d_far.astype(far.dtype)


_attention.defvjp(_attention_forward, _attention_backward)


def band_grad_attention(query: jax.Array, key: jax.Array, value: jax.Array, band: jax.Array,
                        far: jax.Array, block: int | None = None) -> jax.Array:
    """Causal attention with bias band[h, q - k] (q - k < width) and far[h] beyond; equals
    `reference_attention` with that bias, values and gradients (the band's and far's through
    the band, see the module docstring; `block`: `band_bias_gradient`'s query blocks).
    Returns [batch, length, heads, head_dim]."""
    length, width = query.shape[1], band.shape[1]
    check_band_block("band_grad_attention", block, width)
    # cuDNN refuses odd lengths with a bias: one padded position at the end, which no real
    # query sees (causal) and whose output is dropped (so its gradient is zero).
    pad = ((0, 0), (0, length % 2), (0, 0), (0, 0))
    query, key, value = (jnp.pad(x, pad) for x in (query, key, value))
    out = _attention(query, key, value, band.astype(jnp.float32), far.astype(jnp.float32),
                     float(1.0 / np.sqrt(query.shape[-1])), block)
    return out[:, :length]
