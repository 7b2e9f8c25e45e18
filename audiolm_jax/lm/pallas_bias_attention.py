"""Causal flash attention with the T5 bias computed inside the kernel (Pallas; Triton on GPUs).

The `fast` and `band_grad` paths hand cuDNN's flash kernels the bias as a [heads, T, T] square,
read from memory for every tile, and `fast` has cuDNN return that square's gradient too (the
biased backward pass runs ~4x the unbiased one at stage 2's shape; docs/RESULTS.md, issue #7).
But the model's bias is a T5 table: `band[h, o]` for each offset o = query - key below `width`
(= the bucketing's max_distance) and one value `far[h]` beyond. So these kernels take the
table, not the square, and each tile makes its own bias from its (row, column) indices:

  tiles entirely at offsets >= width    the scalar far[h]; no mask (all keys precede the query)
  tiles that meet the band or diagonal  table[h, clip(o, 0, width)], the table being the band
                                        followed by far[h]; keys after the query masked

Key tiles entirely after the query block are skipped. The forward kernel keeps an online softmax
per query block and returns the log-normaliser lse [batch, heads, length] (f32) with the
output; the backward pass (flash-attention 2) recomputes P = exp(logits + bias - lse) per tile,
one kernel over key blocks for d key and d value, one over query blocks for d query. The
table's gradient comes from the band, as in `band_grad_attention` (`band_bias_gradient`):
d far = - sum of d band, since every softmax row's logit gradients sum to zero.

Lengths are padded to a multiple of the blocks (the paper's stages are 750, 2251 and 1801):
padded keys come after every real query, so the causal mask hides them, and the padded
queries' outputs are dropped. Elsewhere than on GPUs the same kernels run in the Pallas
interpreter (slow; the CPU tests' tiny shapes). Under a device mesh the kernels run inside
`shard_map` (`lm/kernel_sharding.py`; GSPMD cannot partition a Pallas call).

`band_forward` / `band_backward` run the same kernels over the band's keys alone (far tiles
skipped, keys `width` or more back masked) for `split_lse_attention`: the backward takes any
(out, lse), its own or a merged softmax's, and its d-query kernel also writes dS on each query
block's window of width + block keys, from which the table's gradient is summed.

Shapes as in `attention`: query/key/value [batch, length, heads, head_dim]; band [heads,
width]; far [heads].
"""
from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from audiolm_jax.lm.band_grad_attention import (band_bias_gradient, band_table_gradient,
                                                 check_band_block)
from audiolm_jax.lm.kernel_sharding import per_shard
from audiolm_jax.lm.pallas_launch import interpret_by_default, launch

_LOG2E = math.log2(math.e)
# Added to masked logits (base-2, f32): zeroes their softmax weight; finite, so no inf - inf.
_MASKED = -1e30


class Blocks(NamedTuple):
    """Tile sizes (powers of two, at least 16: Triton's matrix products) and Triton's launch
    parameters. The forward and d query kernels walk key tiles for a block of `*_q` queries,
    the d key / d value kernel query tiles for a block of `backward_k` keys."""
    q: int = 128
    k: int = 64
    backward_q: int = 64
    backward_k: int = 64
    num_warps: int = 4
    num_stages: int = 3
    backward_num_warps: int = 4
    backward_num_stages: int = 2


BLOCKS = Blocks()


class _Geometry(NamedTuple):
    """Static arguments of the kernels. `band_only`: attend to the band's keys alone (offsets
    0 .. width - 1; `band_forward` / `band_backward`), far tiles skipped, far keys masked."""
    scale: float        # of the logits, 1 / sqrt(the unpadded head_dim)
    width: int          # the band's
    blocks: Blocks
    interpret: bool
    band_only: bool = False


def _call(kernel, geometry: _Geometry, num_warps: int, num_stages: int, **kwargs):
    return launch(kernel, interpret=geometry.interpret, num_warps=num_warps,
                  num_stages=num_stages, **kwargs)


def _bias(table_ref, rows, cols, g: _Geometry):
    """Base-2 bias of a tile that may meet the band: table[clip(row - col, 0, width)], -1e30
    where the key follows the query (or, `band_only`, lies `width` or more back)."""
    offset = rows[:, None] - cols[None, :]
    bias = table_ref[jnp.minimum(jnp.maximum(offset, 0), g.width)]
    visible = (offset >= 0) & (offset < g.width) if g.band_only else offset >= 0
    return jnp.where(visible, bias, _MASKED)


def _key_ranges(start, block_q, block_k, width):
    """For queries start .. start + block_q - 1: key tiles [0, near) lie entirely at offsets
    >= width, tiles [near, end) meet the band or the diagonal, later ones are all masked."""
    near = lax.div(jnp.maximum(start - width + 1, 0), block_k)
    end = lax.div(start + block_q + block_k - 1, block_k)
    return near, end


def _logits(q, k, c):
    return jnp.dot(q, k.T, preferred_element_type=jnp.float32) * c


def _forward_kernel(q_ref, k_ref, v_ref, table_ref, out_ref, lse_ref, *, g: _Geometry):
    block_q, block_k, width = g.blocks.q, g.blocks.k, g.width
    start = pl.program_id(0) * block_q
    q = q_ref[...]
    c = g.scale * _LOG2E
    rows = start + jnp.arange(block_q)
    far = table_ref[width]

    def tile(j, carry, near):
        acc, m, l = carry
        keys = pl.ds(j * block_k, block_k)
        k, v = k_ref[keys, :], v_ref[keys, :]
        s = _logits(q, k, c)
        s = s + (_bias(table_ref, rows, j * block_k + jnp.arange(block_k), g) if near else far)
        m_new = jnp.maximum(m, jnp.max(s, axis=1))
        p = jnp.exp2(s - m_new[:, None])
        correction = jnp.exp2(m - m_new)
        acc = acc * correction[:, None] + jnp.dot(p.astype(v.dtype), v,
                                                  preferred_element_type=jnp.float32)
        return acc, m_new, l * correction + jnp.sum(p, axis=1)

    near, end = _key_ranges(start, block_q, block_k, width)
    carry = (jnp.zeros((block_q, q.shape[-1]), jnp.float32),
             jnp.full((block_q,), -jnp.inf, jnp.float32), jnp.zeros((block_q,), jnp.float32))
    if not g.band_only:
        carry = lax.fori_loop(0, near, partial(tile, near=False), carry)
    acc, m, l = lax.fori_loop(near, end, partial(tile, near=True), carry)
    out_ref[...] = (acc / l[:, None]).astype(out_ref.dtype)
    lse_ref[...] = (m + jnp.log2(l)) / _LOG2E


def _d_query_kernel(q_ref, k_ref, v_ref, table_ref, do_ref, lse_ref, delta_ref, dq_ref,
                    *ds_ref, g: _Geometry):
    """d query for a block of queries; `band_only` also writes the logits' gradient dS of the
    band's tiles to `ds_ref` (the block's window of width + block keys, as
    `band_grad_attention.band_score_gradient` lays it out), for the table's gradient."""
    block_q, block_k, width = g.blocks.backward_q, g.blocks.backward_k, g.width
    start = pl.program_id(0) * block_q
    q, do = q_ref[...], do_ref[...]
    lse, delta = lse_ref[...] * _LOG2E, delta_ref[...]
    c = g.scale * _LOG2E
    rows = start + jnp.arange(block_q)
    far = table_ref[width]

    def tile(j, dq, near):
        keys = pl.ds(j * block_k, block_k)
        k, v = k_ref[keys, :], v_ref[keys, :]
        s = _logits(q, k, c)
        s = s + (_bias(table_ref, rows, j * block_k + jnp.arange(block_k), g) if near else far)
        p = jnp.exp2(s - lse[:, None])
        dp = jnp.dot(do, v.T, preferred_element_type=jnp.float32)
        ds = p * (dp - delta[:, None])
        if ds_ref:       # band_only: the window's slot of tile j (tiles end - slots .. end - 1)
            ds_ref[0][:, pl.ds((j - end + slots) * block_k, block_k)] = ds
        return dq + jnp.dot(ds.astype(k.dtype), k, preferred_element_type=jnp.float32)

    near, end = _key_ranges(start, block_q, block_k, width)
    slots = width // block_k + 1
    for slot in range(slots if ds_ref else 0):      # tiles before key 0 stay zero
        ds_ref[0][:, slot * block_k:(slot + 1) * block_k] = jnp.zeros((block_q, block_k),
                                                                       jnp.float32)
    dq = jnp.zeros((block_q, q.shape[-1]), jnp.float32)
    if not g.band_only:
        dq = lax.fori_loop(0, near, partial(tile, near=False), dq)
    dq = lax.fori_loop(near, end, partial(tile, near=True), dq)
    dq_ref[...] = (dq * g.scale).astype(dq_ref.dtype)


def _d_key_value_kernel(q_ref, k_ref, v_ref, table_ref, do_ref, lse_ref, delta_ref, dk_ref,
                        dv_ref, *, g: _Geometry, query_blocks: int):
    block_q, block_k, width = g.blocks.backward_q, g.blocks.backward_k, g.width
    start = pl.program_id(0) * block_k
    k, v = k_ref[...], v_ref[...]
    c = g.scale * _LOG2E
    cols = start + jnp.arange(block_k)
    far = table_ref[width]

    def tile(i, carry, near):
        dk, dv = carry
        queries = pl.ds(i * block_q, block_q)
        q, do = q_ref[queries, :], do_ref[queries, :]
        lse, delta = lse_ref[queries] * _LOG2E, delta_ref[queries]
        s = _logits(q, k, c)
        s = s + (_bias(table_ref, i * block_q + jnp.arange(block_q), cols, g) if near else far)
        p = jnp.exp2(s - lse[:, None])
        dv = dv + jnp.dot(p.astype(do.dtype).T, do, preferred_element_type=jnp.float32)
        dp = jnp.dot(do, v.T, preferred_element_type=jnp.float32)
        ds = p * (dp - delta[:, None])
        return dk + jnp.dot(ds.astype(q.dtype).T, q, preferred_element_type=jnp.float32), dv

    # Query tiles before `first` see none of these keys; from `far_start` on every offset is
    # >= width (the last key of the block, start + block_k - 1, lies width or more back).
    first = lax.div(start, block_q)
    far_start = jnp.minimum(lax.div(start + block_k - 1 + width + block_q - 1, block_q),
                            query_blocks)
    carry = (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    dk, dv = lax.fori_loop(first, far_start, partial(tile, near=True), carry)
    if not g.band_only:
        dk, dv = lax.fori_loop(far_start, query_blocks, partial(tile, near=False), (dk, dv))
    dk_ref[...] = (dk * g.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _tiles(block, dim):
    """BlockSpec of [b, L, h, d] in tiles of `block` positions along grid axis 0."""
    return pl.BlockSpec((None, block, None, dim), lambda t, b, h: (b, t, h, 0))


def _whole(length, dim):
    return pl.BlockSpec((None, length, None, dim), lambda t, b, h: (b, 0, h, 0))


def _row_tiles(block):
    """BlockSpec of [b, h, L] in tiles of `block` positions along grid axis 0."""
    return pl.BlockSpec((None, None, block), lambda t, b, h: (b, h, t))


def _whole_row(length):
    return pl.BlockSpec((None, None, length), lambda t, b, h: (b, h, 0))


def _table_spec(size):
    return pl.BlockSpec((None, size), lambda t, b, h: (h, 0))


def _forward_local(query, key, value, table, *, g: _Geometry):
    batch, length, heads, dim = query.shape
    bq = g.blocks.q
    return _call(
        partial(_forward_kernel, g=g), g, g.blocks.num_warps, g.blocks.num_stages,
        grid=(length // bq, batch, heads),
        in_specs=[_tiles(bq, dim), _whole(length, dim), _whole(length, dim),
                  _table_spec(table.shape[1])],
        out_specs=[_tiles(bq, dim), _row_tiles(bq)],
        out_shape=[jax.ShapeDtypeStruct(query.shape, query.dtype),
                   jax.ShapeDtypeStruct((batch, heads, length), jnp.float32)],
        name="pallas_bias_attention_forward")(query, key, value, table)


def _backward_local(query, key, value, table, d_out, lse, delta, *, g: _Geometry):
    batch, length, heads, dim = query.shape
    bq, bk = g.blocks.backward_q, g.blocks.backward_k
    whole, table_spec = _whole(length, dim), _table_spec(table.shape[1])
    launch = (g.blocks.backward_num_warps, g.blocks.backward_num_stages)
    out_specs, out_shape = [_tiles(bq, dim)], [jax.ShapeDtypeStruct(query.shape, query.dtype)]
    if g.band_only:              # + dS on each query block's window of width + bq keys
        window = g.width + bq
        out_specs.append(pl.BlockSpec((None, None, None, bq, window),
                                      lambda t, b, h: (b, h, t, 0, 0)))
        out_shape.append(jax.ShapeDtypeStruct((batch, heads, length // bq, bq, window),
                                              jnp.float32))
    d_query, *d_scores = _call(
        partial(_d_query_kernel, g=g), g, *launch, grid=(length // bq, batch, heads),
        in_specs=[_tiles(bq, dim), whole, whole, table_spec, _tiles(bq, dim), _row_tiles(bq),
                  _row_tiles(bq)],
        out_specs=out_specs, out_shape=out_shape,
        name="pallas_bias_attention_d_query")(query, key, value, table, d_out, lse, delta)
    d_key, d_value = _call(
        partial(_d_key_value_kernel, g=g, query_blocks=length // bq), g, *launch,
        grid=(length // bk, batch, heads),
        in_specs=[whole, _tiles(bk, dim), _tiles(bk, dim), table_spec, whole,
                  _whole_row(length), _whole_row(length)],
        out_specs=[_tiles(bk, dim), _tiles(bk, dim)],
        out_shape=[jax.ShapeDtypeStruct(key.shape, key.dtype),
                   jax.ShapeDtypeStruct(value.shape, value.dtype)],
        name="pallas_bias_attention_d_key_value")(query, key, value, table, d_out, lse, delta)
    return (d_query, d_key, d_value, *d_scores)


def _delta(d_out, out):
    """D = d_out . out per query, [batch, heads, length] f32: the backward kernels' row term."""
    return jnp.einsum("blhd,blhd->bhl", d_out.astype(jnp.float32), out.astype(jnp.float32))


def _table(band, far):
    """[heads, W] f32 in base 2: the band, then far[h] (W a power of two above width)."""
    heads, width = band.shape
    size = pl.next_power_of_2(width + 1)
    table = jnp.concatenate([band, jnp.broadcast_to(far[:, None], (heads, size - width))], 1)
    return table.astype(jnp.float32) * _LOG2E


def _forward(query, key, value, band, far, g: _Geometry):
    batch, _, heads, _ = query.shape
    forward = per_shard(partial(_forward_local, g=g), batch, heads, "xxxt", "xr")
    return forward(query, key, value, _table(band, far))


@partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _attention(query, key, value, band, far, g, block):
    return _forward(query, key, value, band, far, g)[0]


def _attention_forward(query, key, value, band, far, g, block):
    out, lse = _forward(query, key, value, band, far, g)
    return out, (query, key, value, out, lse, band, far)


def _attention_backward(g, block, residuals, d_out):
    query, key, value, out, lse, band, far = residuals
    batch, _, heads, _ = query.shape
    delta = _delta(d_out, out)
    backward = per_shard(partial(_backward_local, g=g), batch, heads, "xxxtxrr", "xxx")
    d_query, d_key, d_value = backward(query, key, value, _table(band, far), d_out, lse, delta)
    d_band = band_bias_gradient(query, key, value, out, lse, d_out, band, g.scale, block)
    d_far = -jnp.sum(d_band, axis=1)
    return d_query, d_key, d_value, d_band.astype(band.dtype), d_far.astype(far.dtype)


_attention.defvjp(_attention_forward, _attention_backward)


def _prepare(query, key, value, band, block, blocks: Blocks, interpret: bool | None):
    """Pads length and head_dim to the kernels' needs; returns the padded operands and the
    geometry."""
    length, dim, width = query.shape[1], query.shape[3], band.shape[1]
    check_band_block("pallas_bias_attention", block, width)
    sizes = (blocks.q, blocks.k, blocks.backward_q, blocks.backward_k)
    if any(s < 16 or s & (s - 1) for s in sizes):
        raise ValueError(f"pallas_bias_attention: tile sizes {sizes} must be powers of two >= 16")
    if interpret is None:
        interpret = interpret_by_default()
    operands = tuple(_pad(x, blocks) for x in (query, key, value))
    return operands, _Geometry(float(1.0 / np.sqrt(dim)), width, blocks, interpret)


def _pad(x: jax.Array, blocks: Blocks) -> jax.Array:
    """[b, L, h, d] zero-padded to whole tiles and a power-of-two head_dim >= 16. Zero head
    columns change no logit; the value's come out as zero columns, dropped."""
    multiple = max(blocks.q, blocks.k, blocks.backward_q, blocks.backward_k)
    dim = x.shape[3]
    return jnp.pad(x, ((0, 0), (0, -x.shape[1] % multiple), (0, 0),
                       (0, max(16, pl.next_power_of_2(dim)) - dim)))


def pallas_bias_attention(query: jax.Array, key: jax.Array, value: jax.Array, band: jax.Array,
                          far: jax.Array, block: int | None = None, *, blocks: Blocks = BLOCKS,
                          interpret: bool | None = None) -> jax.Array:
    """Causal attention with bias band[h, q - k] (q - k < width) and far[h] beyond; equals
    `reference_attention` with that bias, values and gradients (the band's and far's through
    the band, see the module docstring; `block`: `band_bias_gradient`'s query blocks).

    Args:
      blocks: the kernels' tile sizes and launch parameters.
      interpret: run the kernels in the Pallas interpreter; default: unless on a GPU.
    Returns:
      [batch, length, heads, head_dim] in `query.dtype`.
    """
    length, dim = query.shape[1], query.shape[3]
    operands, g = _prepare(query, key, value, band, block, blocks, interpret)
    out = _attention(*operands, band.astype(jnp.float32), far.astype(jnp.float32), g, block)
    return out[:, :length, :, :dim]


def pallas_bias_forward(query: jax.Array, key: jax.Array, value: jax.Array, band: jax.Array,
                        far: jax.Array, *, blocks: Blocks = BLOCKS,
                        interpret: bool | None = None) -> tuple[jax.Array, jax.Array]:
    """The forward kernel alone: (output [batch, length, heads, head_dim], lse [batch, heads,
    length] f32, the log-normaliser of each query's scaled, biased logits). Not differentiable."""
    length, dim = query.shape[1], query.shape[3]
    operands, g = _prepare(query, key, value, band, None, blocks, interpret)
    out, lse = _forward(*operands, band.astype(jnp.float32), far.astype(jnp.float32), g)
    return out[:, :length, :, :dim], lse[:, :, :length]


# The band's kernels (`split_lse_attention` on GPUs): query and key tiles of one size dividing
# the band, so that each query block's band keys are whole tiles, the window of width + block
# keys `band_table_gradient` reads.
BAND_BLOCKS = Blocks(q=64, k=64, backward_q=64, backward_k=64)


def _band_prepare(query, key, value, band, blocks: Blocks, interpret: bool | None):
    width = band.shape[1]
    if len({blocks.q, blocks.k, blocks.backward_q, blocks.backward_k}) > 1 or width % blocks.q:
        raise ValueError(f"band kernels: tiles {blocks[:4]} must be one size dividing the band "
                         f"width {width}")
    operands, g = _prepare(query, key, value, band, None, blocks, interpret)
    return operands, g._replace(band_only=True)


def band_forward(query: jax.Array, key: jax.Array, value: jax.Array, band: jax.Array, *,
                 blocks: Blocks = BAND_BLOCKS,
                 interpret: bool | None = None) -> tuple[jax.Array, jax.Array]:
    """Each query over its band's keys alone (offsets 0 .. width - 1, bias band[h, o]):
    (output [batch, length, heads, head_dim], lse [batch, heads, length] f32). Not
    differentiable: `band_backward` gives the gradient, for these or merged residuals."""
    _, length, heads, dim = query.shape
    operands, g = _band_prepare(query, key, value, band, blocks, interpret)
    out, lse = _forward(*operands, band.astype(jnp.float32), jnp.zeros((heads,)), g)
    return out[:, :length, :, :dim], lse[:, :, :length]


def band_backward(query: jax.Array, key: jax.Array, value: jax.Array, band: jax.Array,
                  out: jax.Array, lse: jax.Array, d_out: jax.Array, *,
                  blocks: Blocks = BAND_BLOCKS, interpret: bool | None = None):
    """(d_query, d_key, d_value, d_band f32) of the band's keys in an attention whose weights
    there are exp(scale q.k + band - lse) and whose output is `out`: dS = P (dP - D) with
    D = d_out . out per query. With `band_forward`'s own out and lse that is its gradient;
    with a merged softmax's (`split_lse_attention`), the band's share of the merged gradient.
    lse: [batch, heads, length] f32."""
    (batch, length, heads, dim), width = query.shape, band.shape[1]
    operands, g = _band_prepare(query, key, value, band, blocks, interpret)
    out, d_out = _pad(out, blocks), _pad(d_out, blocks)
    lse = jnp.pad(lse.astype(jnp.float32), ((0, 0), (0, 0), (0, out.shape[1] - length)))
    delta = _delta(d_out, out)
    backward = per_shard(partial(_backward_local, g=g), batch, heads, "xxxtxrr", "xxxw")
    d_query, d_key, d_value, d_scores = backward(
        *operands, _table(band.astype(jnp.float32), jnp.zeros((heads,))), d_out, lse, delta)
    d_band = band_table_gradient(jnp.swapaxes(d_scores, 1, 2), width)
    crop = lambda x: x[:, :length, :, :dim]  # noqa: E731
    return crop(d_query), crop(d_key), crop(d_value), d_band
