"""`cached_attention` as one Pallas kernel (Triton on GPUs) that streams the KV cache once.

At batch 64 a decoding step is bound by reading the cache, and XLA's attention of one query
against it read at ~36% of an H100's bandwidth (benchmarks/decode_attention_layouts.py). Here
one program per (row, head, query) walks the cache in blocks of `block_keys` keys with an online
softmax in f32: each key and value is read once, int8 caches as int8 (converted in registers),
and the [batch, heads, 1, keys] logits, weights and mask never reach memory.

One query against a block is a matrix-vector product; Triton's `dot` wants 16 or more rows, so
the kernel multiplies and sums instead (`q * k` reduced over head_dim, `v * p` over the keys):
the products are a few FLOPs per byte read, so the tensor cores would buy nothing, and padding
the query to 16 rows would spend registers on 15 zero rows.

Key counts that are not a multiple of the block (decode reads `key_limit` slots: 2251, 563...)
need no padding (which would copy the cache): the last block is shifted back to end at the limit
and its keys before the previous block's end are masked. With the decode entry point
(`pallas_decode_attention`) the mask comes from the query position and each row's first key,
and blocks wholly before the first key or after the query are not read at all: a step at
position p reads about p slots of the cache, not `key_limit`.

Shapes as in `cached_attention`: query [batch, queries, heads, head_dim]; cache key [batch,
heads, keys, head_dim], value [batch, heads, head_dim, keys], int8 scales [batch, heads, keys].
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from audiolm_jax.lm.attention import _MASKED, LayerCache, cached_attention, decode_attention_xla
from audiolm_jax.lm.pallas_launch import interpret_by_default, launch

# More queries than this (a prefill) run through `cached_attention`: each query's program
# reads the whole cache row again.
MAX_QUERIES = 8


class DecodeBlocks(NamedTuple):
    """Keys per block (a power of two, capped at the largest power of two <= the key count) and
    Triton's launch parameters. The fastest of a sweep on one H100 at batch 64, int8 cache
    (benchmarks/decode_attention_sweep.sh; docs/RESULTS.md, session 30): 64 keys and 2 warps,
    2226 us for 12 layers against 4475 us at 128 keys and 4 warps (XLA: 2045 us)."""
    keys: int = 64
    num_warps: int = 2
    num_stages: int = 2


BLOCKS = DecodeBlocks()


class _Static(NamedTuple):
    limit: int          # keys read: slots [0, limit) of the cache
    block: int
    scale: float        # 1 / sqrt(head_dim)
    int8: bool
    masked: bool        # an explicit mask operand (the mask entry point)


def _kernel(*refs, s: _Static):
    q_ref, k_ref, v_ref, bias_ref, start_ref, position_ref = refs[:6]
    rest = refs[6:]
    k_scale_ref, v_scale_ref = (rest[0], rest[1]) if s.int8 else (None, None)
    mask_ref = rest[-2] if s.masked else None
    out_ref = rest[-1]
    b, i = pl.program_id(0), pl.program_id(2)
    first, last = start_ref[b], position_ref[b] + i      # visible keys: first .. last
    q = q_ref[...].astype(jnp.float32)
    blocks = pl.cdiv(s.limit, s.block)

    def step(j, carry):
        acc, m, l = carry
        begin = jnp.minimum(j * s.block, s.limit - s.block)   # the last block ends at the limit
        keys = pl.ds(begin, s.block)
        index = begin + jnp.arange(s.block)
        fresh = index >= j * s.block             # the last block's keys not read before
        visible = (index >= first) & (index <= last)
        if s.masked:
            visible = visible & (mask_ref[keys] != 0)
        # int8 and compute-dtype values are exact in f32, as are their products with q.
        k = k_ref[keys, :].astype(jnp.float32)
        logits = jnp.sum(k * q[None, :], axis=1)                          # [block]
        if s.int8:
            logits = logits * k_scale_ref[keys]
        logits = logits * s.scale + bias_ref[keys].astype(jnp.float32)
        logits = jnp.where(visible, logits, _MASKED)
        m_new = jnp.maximum(m, jnp.max(logits))
        # Masked keys (-1e30) weigh exp(-1e30 - m) = 0, or 1 each when no key is visible, as
        # in `cached_attention`'s softmax; keys read twice weigh 0.
        p = jnp.where(fresh, jnp.exp(logits - m_new), 0.0)
        correction = jnp.exp(m - m_new)
        l = l * correction + jnp.sum(p)
        if s.int8:
            p = p * v_scale_ref[keys]
        v = v_ref[:, keys].astype(jnp.float32)          # [head_dim, block]
        return acc * correction + jnp.sum(v * p[None, :], axis=1), m_new, l

    lo = lax.div(jnp.maximum(first, 0), s.block)
    hi = jnp.where(first <= last, jnp.minimum(lax.div(last, s.block) + 1, blocks), lo)
    carry = (jnp.zeros(q.shape, jnp.float32), jnp.float32(-jnp.inf), jnp.float32(0.0))
    acc, _, l = lax.fori_loop(lo, hi, step, carry)
    # l = 0 only when no key is visible (never in decoding): zeros rather than NaNs.
    out_ref[...] = (acc / jnp.where(l > 0, l, 1.0)).astype(out_ref.dtype)


def _broadcast_spec(x: jax.Array, batch: int, heads: int, queries: int):
    """x [B', H', Q', limit], each of B', H', Q' 1 or full: a per-(row, head, query) row."""
    pick = lambda axis, full, index: index if x.shape[axis] == full > 1 else 0  # noqa: E731
    return pl.BlockSpec((None, None, None, x.shape[3]),
                        lambda b, h, i: (pick(0, batch, b), pick(1, heads, h),
                                         pick(2, queries, i), 0))


def _as_4d(x: jax.Array, limit: int) -> jax.Array:
    x = jnp.asarray(x)
    x = x.reshape((1,) * (4 - x.ndim) + x.shape)
    return jnp.broadcast_to(x, x.shape[:3] + (limit,))


def _attend(query, cache: LayerCache, bias, key_start, position, mask, limit: int,
            blocks: DecodeBlocks, interpret: bool | None):
    batch, queries, heads, dim = query.shape
    max_len = cache.key.shape[2]
    block = min(blocks.keys, 1 << (limit.bit_length() - 1))
    int8 = cache.key_scale is not None
    s = _Static(limit, block, float(1.0 / np.sqrt(dim)), int8, mask is not None)
    bias = _as_4d(bias, limit)
    row = lambda: pl.BlockSpec((None, None, max_len), lambda b, h, i: (b, h, 0))  # noqa: E731
    whole = pl.BlockSpec((batch,), lambda b, h, i: (0,))
    operands = [query, cache.key, cache.value, bias, key_start, position]
    specs = [pl.BlockSpec((None, None, None, dim), lambda b, h, i: (b, i, h, 0)),
             pl.BlockSpec((None, None, max_len, dim), lambda b, h, i: (b, h, 0, 0)),
             pl.BlockSpec((None, None, dim, max_len), lambda b, h, i: (b, h, 0, 0)),
             _broadcast_spec(bias, batch, heads, queries), whole, whole]
    if int8:
        operands += [cache.key_scale, cache.value_scale]
        specs += [row(), row()]
    if mask is not None:
        mask = _as_4d(mask, limit).astype(jnp.int8)
        operands.append(mask)
        specs.append(_broadcast_spec(mask, batch, heads, queries))
    return launch(
        partial(_kernel, s=s), interpret=interpret_by_default() if interpret is None else interpret,
        num_warps=blocks.num_warps, num_stages=blocks.num_stages,
        grid=(batch, heads, queries), in_specs=specs,
        out_specs=pl.BlockSpec((None, None, None, dim), lambda b, h, i: (b, i, h, 0)),
        out_shape=jax.ShapeDtypeStruct(query.shape, query.dtype),
        name="decode_attention")(*operands)


def _applies(query: jax.Array, limit: int) -> bool:
    """Whether the kernel takes these shapes: few queries, a power-of-two head_dim (Triton's
    tensors), 16 keys or more (smaller blocks gain nothing; the tests' tiny caches have more)."""
    dim = query.shape[3]
    return query.shape[1] <= MAX_QUERIES and dim >= 16 and dim & (dim - 1) == 0 and limit >= 16


def pallas_cached_attention(query: jax.Array, cache: LayerCache, bias: jax.Array,
                            mask: jax.Array, *, blocks: DecodeBlocks = BLOCKS,
                            interpret: bool | None = None) -> jax.Array:
    """`cached_attention(query, cache, bias, mask)` through the kernel, the mask read as an
    int8 operand (the reference-equivalent path; decoding uses `pallas_decode_attention`).
    Falls back to `cached_attention` for more than `MAX_QUERIES` queries, a head_dim that is
    not a power of two >= 16, or fewer than 16 keys.

    Args:
      query: [batch, queries, heads, head_dim]; cache: key [batch, heads, keys, head_dim],
        value [batch, heads, head_dim, keys] (+ f32 scales [batch, heads, keys] if int8);
      bias, mask: broadcastable to [batch, heads, queries, keys].
      interpret: the Pallas interpreter; default: unless the target is a GPU.
    Returns:
      [batch, queries, heads, head_dim] in `query.dtype`.
    """
    limit = cache.key.shape[2]
    if not _applies(query, limit):
        return cached_attention(query, cache, bias, mask)
    everything = jnp.zeros((query.shape[0],), jnp.int32)
    last = jnp.full((query.shape[0],), limit, jnp.int32)  # with any query offset: every key
    return _attend(query, cache, bias, everything, last, mask, limit, blocks, interpret)


def pallas_decode_attention(query: jax.Array, cache: LayerCache, bias: jax.Array,
                            position: jax.Array, key_start: jax.Array | None = None,
                            key_limit: int | None = None, *, blocks: DecodeBlocks = BLOCKS,
                            interpret: bool | None = None) -> jax.Array:
    """`SelfAttention.decode`'s attention: `cached_attention` of queries at positions
    position, position + 1, ... against cache slots [0, key_limit), keys after a query's
    position or before its row's `key_start` masked; built in the kernel from these integers.
    The cache is passed whole (slicing it to `key_limit` would copy it) and only the slots a
    row can see are read. A query that sees no key gets zeros (`cached_attention`: the mean
    value); decoding never asks for one. Falls back to `cached_attention` as
    `pallas_cached_attention` does.

    Args:
      query: [batch, queries, heads, head_dim]; cache: as `pallas_cached_attention`'s, any
        max_len >= key_limit; bias: broadcastable to [batch, heads, queries, key_limit].
      position: int32 scalar (may be traced), the position of query 0.
      key_start: optional int32 [batch]: each row's first visible key. key_limit: static;
        None: max_len.
    Returns:
      [batch, queries, heads, head_dim] in `query.dtype`.
    """
    batch = query.shape[0]
    limit = cache.key.shape[2] if key_limit is None else int(key_limit)
    start = (jnp.zeros((batch,), jnp.int32) if key_start is None
             else jnp.asarray(key_start, jnp.int32).reshape(batch))
    if not _applies(query, limit):
        return decode_attention_xla(query, cache, bias, position, start, limit)
    position = jnp.broadcast_to(jnp.asarray(position, jnp.int32), (batch,))
    return _attend(query, cache, bias, start, position, None, limit, blocks, interpret)
