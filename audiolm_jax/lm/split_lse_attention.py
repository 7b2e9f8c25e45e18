"""Split attention (the T5 band apart, an unbiased flash kernel beyond) merged by log-normalisers.

`split_attention` splits the causal T5 bias the same way: beyond a band of `width` offsets the
bias is one constant `far[h]`, so the far keys need a flash kernel without a bias. It gets the
far part's normaliser through an extra "sink" key and value columns, which pads head_dim 64 to
72 and made the kernel slow (docs/RESULTS.md, issue #7). Here each part returns its
log-normaliser (cuDNN's as softmax statistics) and the gradient is written out:

  forward: band (out_b, lse_b) over keys i - w < j <= i with bias band[h, i - j];
           far (out_f, lse_f) = flash(q[w:], k[:-w], v[:-w]) (query i sees far keys
           j <= i - w: a plain causal kernel on shifted operands);
           total = logaddexp(lse_b, lse_f + far),
           out = out_b e^(lse_b - total) + out_f e^(lse_f + far - total)
  backward: with P the merged weights and D = d_out . out per query, dS = P (dP - D) on every
           key. Each part's backward pass gets the merged residuals, out and its share of
           total, in place of its own: it recomputes its weights from them and D from `out`
           (what ring attention does with its blocks). The band's pass also returns the T5
           table's gradient (dS summed per offset); d far = -(sum of d band), since each
           softmax row's logit gradients sum to zero.

No T x T bias is built or kept, and the flash kernel runs at head_dim 64. On GPUs the far kernel
is cuDNN's (`lm.cudnn_private`) and the band's are `pallas_bias_attention`'s Triton kernels
restricted to the band (`band_forward`, `band_backward`); elsewhere exact XLA kernels stand in
(the XLA band materialises [blocks, width, 2 width] logits: on an H100 it made this path slower
than `band_grad` and ran out of memory at stage 2's batch 32; docs/RESULTS.md, session 31),
with the same residual contracts, so the CPU tests check the merge and gradient arithmetic.
The XLA far kernel is a full [T, T] attention: on TPUs use `split` (splash attention beyond the
band).

Shapes as in `attention`: query/key/value [batch, length, heads, head_dim]; band [heads, width];
far [heads].
"""
from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from audiolm_jax.lm import cudnn_private
from audiolm_jax.lm.band_grad_attention import (band_score_gradient, band_table_gradient,
                                                 xla_attention)
from audiolm_jax.lm.pallas_bias_attention import band_backward, band_forward
from audiolm_jax.lm.pallas_launch import interpret_by_default
from audiolm_jax.lm.split_attention import band_attention, band_windows


class FarKernel(NamedTuple):
    """Unbiased causal attention as two functions with an explicit residual contract.
    forward(q, k, v, scale) -> (out [b, L, h, d], lse [b, h, L] f32);
    backward(q, k, v, out, lse, d_out, scale) -> (dq, dk, dv), weights exp(scale q.k - lse)."""
    forward: Callable
    backward: Callable


def _xla_logits(query, key, scale):
    """f32 [b, h, L, L] scaled causal logits (the reference's), later keys masked."""
    from audiolm_jax.lm.attention import causal_mask, reference_logits  # imports this module
    positions = jnp.arange(query.shape[1])
    return reference_logits(query, key, jnp.zeros(()), causal_mask(positions, positions), scale)


def _xla_forward(query, key, value, scale):
    return xla_attention(query, key, value, jnp.zeros(()), scale)


def _xla_backward(query, key, value, out, lse, d_out, scale):
    p = jnp.exp(_xla_logits(query, key, scale) - lse[..., None])
    d_out = d_out.astype(jnp.float32)
    d_p = jnp.einsum("bqhd,bkhd->bhqk", d_out, value.astype(jnp.float32))
    delta = jnp.moveaxis(jnp.sum(d_out * out.astype(jnp.float32), -1), 1, 2)[..., None]
    d_s = p * (d_p - delta) * scale
    d_query = jnp.einsum("bhqk,bkhd->bqhd", d_s, key.astype(jnp.float32))
    d_key = jnp.einsum("bhqk,bqhd->bkhd", d_s, query.astype(jnp.float32))
    d_value = jnp.einsum("bhqk,bqhd->bkhd", p, d_out)
    return tuple(g.astype(x.dtype) for g, x in zip((d_query, d_key, d_value), (query, key, value)))


XLA_FAR = FarKernel(_xla_forward, _xla_backward)


def _even(x, axis):
    """x padded to an even length along `axis`, cuDNN's rule. Padded queries come last (no real
    query sees their keys) and get zero cotangents, so their gradients are zero."""
    from audiolm_jax.lm.attention import pad_length   # attention imports this module
    return pad_length(x, (axis,), 2)


def _cudnn_forward(query, key, value, scale):
    length = query.shape[1]
    out, lse = cudnn_private.attention(*(_even(x, 1) for x in (query, key, value)), None, scale)
    return out[:, :length], lse[..., :length]


def _cudnn_backward(query, key, value, out, lse, d_out, scale):
    length = query.shape[1]
    padded = [_even(x, 1) for x in (query, key, value, out)]
    grads = cudnn_private.causal_backward(*padded, _even(lse, 2), _even(d_out, 1), scale)
    return tuple(g[:, :length] for g in grads)


CUDNN_FAR = FarKernel(_cudnn_forward, _cudnn_backward)


def default_far_kernel(query: jax.Array) -> FarKernel:
    """cuDNN's where it takes these operands and its private entry points fit, else XLA's."""
    from audiolm_jax.lm.attention import cudnn_supported   # attention imports this module
    return CUDNN_FAR if cudnn_supported(query, query) and cudnn_private.available() else XLA_FAR


class BandKernel(NamedTuple):
    """Attention over the band's keys alone (offsets 0 .. width - 1, bias band[h, o]), scale
    1 / sqrt(head_dim), with an explicit residual contract like `FarKernel`'s.
    forward(q, k, v, band) -> (out [b, L, h, d], lse [b, h, L] f32);
    backward(q, k, v, band, out, lse, d_out) -> (dq, dk, dv, d_band [h, width] f32)."""
    forward: Callable
    backward: Callable


def _xla_band_forward(query, key, value, band):
    out, lse = band_attention(query, key, value, band, float(1.0 / np.sqrt(query.shape[-1])))
    return out, jnp.moveaxis(lse, 1, 2)


def _window_transpose(x: jax.Array, windows: jax.Array, width: int) -> jax.Array:
    """The gradient in x [b, L, h, d] of `band_windows(x, width)` given the windows' gradient."""
    return jax.vjp(lambda y: band_windows(y, width), x)[1](windows.astype(x.dtype))[0]


def _xla_band_backward(query, key, value, band, out, lse, d_out):
    batch, length, heads, dim = query.shape
    width, scale = band.shape[1], float(1.0 / np.sqrt(dim))
    p, d_s = band_score_gradient(query, key, value, out, lse, d_out, band, scale)
    d_band = band_table_gradient(d_s, width)
    d_s = (d_s * scale).astype(query.dtype)
    blocks = lambda x: jnp.pad(x, ((0, 0), (0, -length % width), (0, 0), (0, 0))).reshape(  # noqa: E731
        batch, -1, width, heads, dim)
    d_query = jnp.einsum("bnhqk,bnkhd->bnqhd", d_s, band_windows(key, width),
                         preferred_element_type=jnp.float32).reshape(batch, -1, heads, dim)
    d_key = _window_transpose(key, jnp.einsum("bnhqk,bnqhd->bnkhd", d_s, blocks(query),
                                              preferred_element_type=jnp.float32), width)
    d_value = _window_transpose(value, jnp.einsum(
        "bnhqk,bnqhd->bnkhd", p.astype(value.dtype), blocks(d_out.astype(value.dtype)),
        preferred_element_type=jnp.float32), width)
    return d_query[:, :length], d_key, d_value, d_band


XLA_BAND = BandKernel(_xla_band_forward, _xla_band_backward)
# The Pallas kernels of `pallas_bias_attention` restricted to the band (Triton on GPUs; the
# interpreter elsewhere, which the tests use).
PALLAS_BAND = BandKernel(band_forward, band_backward)


def default_band_kernel() -> BandKernel:
    """The Pallas band kernels where they compile (GPUs), else XLA's."""
    return XLA_BAND if interpret_by_default() else PALLAS_BAND


def _merged(query, key, value, band, far, kernels):
    """(out f32, total [b, h, L] f32): the biased attention and its log-normaliser."""
    far_path, band_path = kernels
    width, scale = band.shape[1], float(1.0 / np.sqrt(query.shape[-1]))
    out, total = band_path.forward(query, key, value, band)         # the band alone
    out = out.astype(jnp.float32)
    if query.shape[1] <= width:                # no query reaches past the band
        return out, total
    out_f, lse_f = far_path.forward(query[:, width:], key[:, :-width], value[:, :-width], scale)
    lse_f = lse_f + far[None, :, None]                                 # [b, h, L - w]
    lse_b = total[:, :, width:]
    tail = jnp.logaddexp(lse_b, lse_f)
    weight = lambda lse: jnp.moveaxis(jnp.exp(lse - tail), 1, 2)[..., None]  # noqa: E731
    merged = out[:, width:] * weight(lse_b) + out_f.astype(jnp.float32) * weight(lse_f)
    return (jnp.concatenate([out[:, :width], merged], 1),
            jnp.concatenate([total[:, :, :width], tail], 2))


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def _attention(query, key, value, band, far, kernels):
    return _merged(query, key, value, band, far, kernels)[0].astype(value.dtype)


def _attention_forward(query, key, value, band, far, kernels):
    out, total = _merged(query, key, value, band, far, kernels)
    out = out.astype(value.dtype)
    return out, (query, key, value, band, far, out, total)


def _attention_backward(kernels, residuals, d_out):
    query, key, value, band, far, out, total = residuals
    far_path, band_path = kernels
    width, scale = band.shape[1], float(1.0 / np.sqrt(query.shape[-1]))
    # The band's share: its weights under the merged normaliser (and the table's gradient).
    grads = band_path.backward(query, key, value, band, out, total, d_out)
    d_query, d_key, d_value = (g.astype(jnp.float32) for g in grads[:3])
    d_band = grads[3]
    if query.shape[1] > width:
        # The far keys' share: the flash kernel's backward pass on the merged residuals.
        dq_f, dk_f, dv_f = far_path.backward(
            query[:, width:], key[:, :-width], value[:, :-width], out[:, width:],
            total[:, :, width:] - far[None, :, None], d_out[:, width:], scale)
        shift = lambda g, front: jnp.pad(  # noqa: E731
            g.astype(jnp.float32), ((0, 0), (width, 0) if front else (0, width), (0, 0), (0, 0)))
        d_query = d_query + shift(dq_f, True)
        d_key, d_value = d_key + shift(dk_f, False), d_value + shift(dv_f, False)
    d_far = -jnp.sum(d_band, axis=1)
    return (d_query.astype(query.dtype), d_key.astype(key.dtype), d_value.astype(value.dtype),
            d_band.astype(band.dtype), d_far.astype(far.dtype))


_attention.defvjp(_attention_forward, _attention_backward)


def split_lse_attention(query: jax.Array, key: jax.Array, value: jax.Array, band: jax.Array,
                        far: jax.Array, far_kernel: FarKernel | None = None,
                        band_kernel: BandKernel | None = None) -> jax.Array:
    """Causal attention with bias band[h, q - k] (q - k < width) and far[h] beyond; equals
    `reference_attention` with that bias, values and gradients (module docstring).

    Args:
      query, key, value: [batch, length, heads, head_dim].
      band: [heads, width]; far: [heads] (`RelativePositionBias.split()`).
      far_kernel: the far part's flash kernel; default `default_far_kernel(query)`.
      band_kernel: the band's kernels; default `default_band_kernel()`.
    Returns:
      [batch, length, heads, head_dim] in `value.dtype`.
    """
    kernels = (default_far_kernel(query) if far_kernel is None else far_kernel,
               default_band_kernel() if band_kernel is None else band_kernel)
    return _attention(query, key, value, band.astype(jnp.float32), far.astype(jnp.float32),
                      kernels)
