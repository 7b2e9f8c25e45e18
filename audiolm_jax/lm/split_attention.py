"""Causal attention with a T5 bias, split so the flash kernel never sees a bias.

A causal T5 bias depends on the offset o = query - key only through its bucket, and every
offset o >= max_distance falls in the last bucket: beyond a band of `width = max_distance`
keys the bias is one constant `far` per head. So

  softmax over keys of (s_qk + b(q - k))  =  merge of two softmaxes:
    band: keys q - width < k <= q, bias b(q - k)   (XLA, blocks of `width` queries)
    far:  keys k <= q - width, bias `far`           (a plain causal flash kernel, no bias)

merged by their log-normalisers. A flash kernel returns only its normalised output, so the far
part carries its normaliser in its output: a "sink" key with logit 0 is put before the first
key, and the values get two extra columns, [v, 1, 0] for real keys and [0, 0, 1] for the sink.
With Z = sum of exp(logits) over the real keys, the kernel's output is

  [Z o / (Z + 1),  Z / (Z + 1),  1 / (Z + 1)]  =:  [a, m, e],   so  Z = m / e,

and the merged output is (Zb ob + exp(far) a / e) / (Zb + exp(far) m / e). Gradients follow
through the kernel's own backward pass. Why: cuDNN's flash kernels with a bias input run at
about half their unbiased speed and add a bias-gradient kernel over the whole T x T square
(docs/RESULTS.md, issue #7); here the bias touches only T x 2 width logits.

Shapes as in `attention`: query/key/value [batch, length, heads, head_dim].
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

# attend(query, key, value, scale) -> causal softmax attention without a bias, normalised.
Attend = Callable[[jax.Array, jax.Array, jax.Array, float], jax.Array]


def xla_attend(query, key, value, scale):
    return jax.nn.dot_product_attention(query, key, value, scale=scale, is_causal=True)


def band_blocks(x: jax.Array, block: int) -> jax.Array:
    """[b, L, ...] -> [b, n, block, ...]: blocks of `block` positions, zero-padded at the end."""
    batch, length = x.shape[:2]
    blocks = -(-length // block)
    x = jnp.pad(x, ((0, 0), (0, blocks * block - length)) + ((0, 0),) * (x.ndim - 2))
    return x.reshape(batch, blocks, block, *x.shape[2:])


def band_windows(x: jax.Array, width: int, block: int | None = None) -> jax.Array:
    """[b, L, h, d] -> [b, n, width + block, h, d]: for each block of `block` queries (default
    `width`; a divisor of it), the `width` keys before the block (zeros before position 0),
    then its own."""
    block = block or width
    if width % block:
        raise ValueError(f"band_windows: block {block} must divide width {width}")
    batch, length = x.shape[:2]
    blocks = -(-length // block)
    x = jnp.pad(x, ((0, 0), (width, blocks * block - length)) + ((0, 0),) * (x.ndim - 2))
    x = x.reshape(batch, blocks + width // block, block, *x.shape[2:])
    # Slices and a concatenation, not a gather: their gradient is no scatter-add.
    return jnp.concatenate([x[:, i:i + blocks] for i in range(width // block + 1)], axis=2)


def band_geometry(width: int, blocks: int, block: int | None = None) -> tuple[jax.Array, jax.Array]:
    """For query r of a block and key c of its window (`band_windows`): offset [block, width +
    block] = query - key position, and valid [n, block, width + block] = the key is in the band
    (0 <= offset < width) and not before 0."""
    block = block or width
    offset = width + jnp.arange(block)[:, None] - jnp.arange(width + block)[None]
    key_position = jnp.arange(blocks)[:, None] * block - width + jnp.arange(width + block)[None]
    valid = (offset >= 0) & (offset < width)
    return offset, valid[None] & (key_position >= 0)[:, None, :]


def band_logits(query: jax.Array, key: jax.Array, band_bias: jax.Array, scale: float,
                block: int | None = None) -> jax.Array:
    """f32 [b, n, h, block, width + block]: each block of queries against its window
    (`band_windows`), scaled, plus `band_bias[:, q - k]`; -inf outside the band."""
    width = band_bias.shape[1]
    block = block or width
    q = band_blocks(query, block)
    k = band_windows(key, width, block)
    offset, valid = band_geometry(width, q.shape[1], block)
    bias = jnp.take(band_bias.astype(jnp.float32), jnp.clip(offset, 0, width - 1), axis=1)
    logits = jnp.einsum("bnqhd,bnkhd->bnhqk", q, k, preferred_element_type=jnp.float32)
    return jnp.where(valid[None, :, None], logits * scale + bias[None, None], -jnp.inf)


def band_attention(query: jax.Array, key: jax.Array, value: jax.Array, band_bias: jax.Array,
                   scale: float) -> tuple[jax.Array, jax.Array]:
    """Each query over the `width` keys ending at its own position, with bias `band_bias[:, o]`
    at offset o = query - key.

    Queries go in blocks of `width`; a block reads its own and the previous block's keys.
    Returns the normalised output [batch, length, heads, head_dim] (f32) and the log-normaliser
    [batch, length, heads] (f32) of the biased logits.
    """
    batch, length, heads, dim = query.shape
    width = band_bias.shape[1]
    logits = band_logits(query, key, band_bias, scale)                 # [b, n, h, w, 2w]
    v = band_windows(value, width)
    blocks = logits.shape[1]
    lse = jax.nn.logsumexp(logits, axis=-1)                            # [b, n, h, w]
    weights = jnp.exp(logits - lse[..., None])
    out = jnp.einsum("bnhqk,bnkhd->bnqhd", weights.astype(value.dtype), v,
                     preferred_element_type=jnp.float32)
    out = out.reshape(batch, blocks * width, heads, dim)[:, :length]
    lse = jnp.moveaxis(lse, 2, 3).reshape(batch, blocks * width, heads)[:, :length]
    return out, lse


def far_attention(query: jax.Array, key: jax.Array, value: jax.Array, width: int, scale: float,
                  attend: Attend) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Unbiased causal attention of query q over keys k <= q - width, with its normaliser.

    Only queries from `width - 1` on take part (row 0 of the result is query width - 1, which
    sees the sink alone). Returns (a, m, e) as in the module docstring, each for queries
    width - 1 .. length - 1: a [b, n, h, d], m and e [b, n, h], all f32.
    """
    batch, length, heads, dim = query.shape
    rows = length - width + 1
    extra = 2 + (-(dim + 2)) % 8                       # two columns, head size kept a multiple of 8
    zeros = lambda n, d: jnp.zeros((batch, n, heads, d), query.dtype)  # noqa: E731
    ones = jnp.ones((batch, rows - 1, heads, 1), value.dtype)
    q = jnp.concatenate([query[:, width - 1:], zeros(rows, extra)], -1)
    k = jnp.concatenate([zeros(1, dim + extra), jnp.concatenate(
        [key[:, :rows - 1], zeros(rows - 1, extra)], -1)], 1)
    sink = jnp.zeros((batch, 1, heads, dim + extra), value.dtype).at[..., dim + 1].set(1)
    v = jnp.concatenate([sink, jnp.concatenate(
        [value[:, :rows - 1], ones, zeros(rows - 1, extra - 1)], -1)], 1)
    out = attend(q, k, v, scale).astype(jnp.float32)
    return out[..., :dim], out[..., dim], out[..., dim + 1]


def split_bias_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                         band_bias: jax.Array, far_bias: jax.Array,
                         attend: Attend = xla_attend) -> jax.Array:
    """Causal attention with bias `band_bias[h, q - k]` for q - k < width and `far_bias[h]`
    beyond; equals `reference_attention` with that bias and a causal mask.

    Args:
      query, key, value: [batch, length, heads, head_dim].
      band_bias: [heads, width], width = the T5 bias's max_distance.
      far_bias: [heads], the bias of every offset >= width (the last bucket's value).
      attend: the unbiased causal kernel for the far part (`attention.unbiased_flash_attention`
        picks cuDNN's on GPUs).
    Returns:
      [batch, length, heads, head_dim] in `value.dtype`.
    """
    length, dim = query.shape[1], query.shape[3]
    width = band_bias.shape[1]
    scale = 1.0 / np.sqrt(dim)
    # The band's f32 logits and weights ([batch, blocks, heads, width, 2 width] each) are
    # recomputed in the backward pass rather than kept: 12 layers of them took more memory
    # than an H100 has at stage 2's batch 32 (docs/RESULTS.md), and they are cheap to redo.
    out, lse = jax.checkpoint(band_attention, static_argnums=(4,))(
        query, key, value, band_bias, scale)
    if length < width:                 # no query reaches past the band
        return out.astype(value.dtype)
    a, m, e = far_attention(query, key, value, width, scale, attend)
    far = far_bias.astype(jnp.float32)
    # log of exp(far) * Z with Z = m / e; rows that see only the sink (m = 0) get -inf. The
    # clamp keeps log's gradient finite where the `where` discards it.
    tiny = np.finfo(np.float32).tiny
    far_lse = jnp.where(m > 0, far + jnp.log(jnp.maximum(m, tiny)) - jnp.log(jnp.maximum(e, tiny)),
                        -jnp.inf)
    band_lse = lse[:, width - 1:]
    total = jnp.logaddexp(band_lse, far_lse)
    # exp(far) a / e / exp(total): the far part's share of the merged numerator.
    far_out = a * (jnp.exp(far - total) / jnp.maximum(e, tiny))[..., None]
    merged = out[:, width - 1:] * jnp.exp(band_lse - total)[..., None] + far_out
    return jnp.concatenate([out[:, :width - 1], merged], 1).astype(value.dtype)
