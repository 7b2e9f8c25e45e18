"""Causal self-attention with an additive (relative position) bias: two paths and a KV cache.

- `reference_attention`: einsum + bias + mask with an f32 softmax; exact, any backend, any
  query/key lengths. The KV-cached decode path uses it (one query against the cache).
- `fast_causal_attention`: `jax.nn.dot_product_attention(bias=..., is_causal=True)`; picks
  cuDNN flash attention on GPUs when dtype, head size and lengths allow it, else XLA's fused
  implementation. Neither path applies dropout to the attention weights (flash kernels cannot),
  so the model's dropout sits on the residual branches and the feed-forward hidden layer.
- `split_bias_attention` (lm/split_attention.py): the bias on a 128-wide band in XLA, the rest
  through an unbiased flash kernel; exact, for when a biased flash kernel is slow.
- `band_grad_attention` (lm/band_grad_attention.py): cuDNN's biased flash kernel without its
  costly bias-gradient output; the T5 table's gradient computed from a 128-offset band.
- `pallas_bias_attention` (lm/pallas_bias_attention.py): a Pallas (Triton) flash kernel that
  makes each tile's bias from the T5 table and the tile's indices: no [T, T] bias square.
- `split_lse_attention` (lm/split_lse_attention.py): the split's band (Pallas kernels on GPUs,
  XLA elsewhere) and an unbiased cuDNN kernel beyond it at head size 64, merged by
  log-normalisers; each part's backward pass runs on the merged residuals.
- `LayerCache`: per-layer keys/values of a fixed `max_len`, written with
  `lax.dynamic_update_slice` so decoding runs inside `lax.scan`/`while_loop`; in the compute
  dtype, or int8 with one scale per (position, head) (`KV_CACHES`): half the bytes a large-batch
  decoding step reads. `cached_attention` attends to it.

Shapes: query/key/value `[batch, length, heads, head_dim]`; bias `[1, heads, queries, keys]`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from audiolm_jax.lm.band_grad_attention import band_grad_attention
from audiolm_jax.lm.int8 import quantize_int8
from audiolm_jax.lm.pallas_bias_attention import pallas_bias_attention
from audiolm_jax.lm.params import logical_param
from audiolm_jax.lm.split_attention import split_bias_attention
from audiolm_jax.lm.split_lse_attention import split_lse_attention
from audiolm_jax.lm.tpu_attention import splash_causal_attention, target_platform

ATTENTION_PATHS = ("fast", "reference", "split", "band_grad", "pallas_bias", "split_lse")
# Paths that take the bias as `SplitBias` (band, far) rather than a [1, heads, L, L] square.
SPLIT_BIAS_PATHS = ("split", "band_grad", "pallas_bias", "split_lse")


class SplitBias(NamedTuple):
    """The T5 bias as `split_attention` takes it: [heads, band width] and [heads]."""
    band: jax.Array
    far: jax.Array

# Added to masked logits in f32; large enough to zero the softmax weight, finite so a fully
# masked row cannot make NaNs.
_MASKED = -1e30

ActivationConstraint = Callable[[jax.Array, tuple], jax.Array]


def reference_logits(query: jax.Array, key: jax.Array, bias: jax.Array, mask: jax.Array,
                     scale: float) -> jax.Array:
    """f32 [batch, heads, queries, keys]: q k^T * scale + bias, masked logits at `_MASKED`."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32)
    return jnp.where(mask, logits * scale + bias.astype(jnp.float32), _MASKED)


def reference_attention(query: jax.Array, key: jax.Array, value: jax.Array, bias: jax.Array,
                        mask: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(head_dim) + bias, masked) v, logits and softmax in f32.

    Args:
      query: [batch, queries, heads, head_dim]
      key, value: [batch, keys, heads, head_dim]
      bias: broadcastable to [batch, heads, queries, keys]
      mask: bool, broadcastable to [batch, heads, queries, keys]; True = may attend.
    Returns:
      [batch, queries, heads, head_dim] in `value.dtype`.
    """
    logits = reference_logits(query, key, bias, mask, 1.0 / np.sqrt(query.shape[-1]))
    weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, value)


def causal_mask(query_positions: jax.Array, key_positions: jax.Array) -> jax.Array:
    """bool [1, 1, queries, keys]: a query attends to keys at or before its own position."""
    return (key_positions[None, :] <= query_positions[:, None])[None, None]


def cudnn_supported(query: jax.Array, key: jax.Array) -> bool:
    """Whether cuDNN flash attention accepts these operands (with a bias, training included).

    Mirrors the checks jax makes before calling cuDNN: half-precision inputs, head size a
    multiple of 8 and at most 128 (256 on Hopper; 128 keeps the check device-independent).
    cuDNN also wants even lengths with a bias; `fast_causal_attention` pads odd ones.
    """
    if jax.default_backend() != "gpu":
        return False
    if query.dtype not in (jnp.bfloat16, jnp.float16):
        return False
    head_dim = query.shape[-1]
    if head_dim % 8 or head_dim > 128:
        return False
    return True


def pad_length(x: jax.Array, axes: tuple[int, ...], multiple: int) -> jax.Array:
    """x zero-padded at the end of each of `axes` to a multiple of `multiple`."""
    widths = [(0, 0)] * x.ndim
    for axis in axes:
        widths[axis] = (0, -x.shape[axis] % multiple)
    return jnp.pad(x, widths)


def even_length_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                          bias: jax.Array | None, implementation: str | None,
                          scale: float | None = None) -> jax.Array:
    """Causal `dot_product_attention` with the length padded to even by one position at the end.

    cuDNN refuses odd lengths with a bias, and the paper's stage 2 (250 + 1 + 2000 = 2251) and
    stage 3 (1801) are odd. The causal mask keeps every real query from seeing the padded key,
    and the padded query's output is dropped, so the result equals the unpadded attention.
    `bias=None` attends without a bias (`split_attention`'s far part, lm_step_profile.py's
    `no_bias` ablation); `scale` defaults to
    1 / sqrt(head_dim).
    """
    length = query.shape[1]
    query, key, value = (pad_length(x, (1,), 2) for x in (query, key, value))
    if bias is not None:
        bias = jnp.broadcast_to(bias, bias.shape[:2] + (length, length))
        bias = pad_length(bias, (2, 3), 2).astype(query.dtype)
    out = jax.nn.dot_product_attention(query, key, value, bias=bias, scale=scale, is_causal=True,
                                       implementation=implementation)
    return out[:, :length]


def fast_causal_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                          bias: jax.Array) -> jax.Array:
    """Causal attention through `jax.nn.dot_product_attention`; same contract as the reference
    with `mask = causal_mask(arange(queries), arange(keys))` (queries == keys here)."""
    implementation = "cudnn" if cudnn_supported(query, key) else None  # None: XLA
    if implementation == "cudnn" and query.shape[1] % 2:
        return even_length_attention(query, key, value, bias, implementation)
    return jax.nn.dot_product_attention(query, key, value, bias=bias.astype(query.dtype),
                                        is_causal=True, implementation=implementation)


def unbiased_flash_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                             scale: float) -> jax.Array:
    """Causal attention without a bias: splash on TPUs, cuDNN flash where it applies, else
    XLA's."""
    if target_platform() == "tpu":
        return splash_causal_attention(query, key, value, scale)
    if cudnn_supported(query, key):
        return even_length_attention(query, key, value, None, "cudnn", scale)
    return jax.nn.dot_product_attention(query, key, value, scale=scale, is_causal=True)


KV_CACHES = ("compute", "int8")
# How `SelfAttention.decode` attends to the cache for one-token steps: "xla" (`cached_attention`)
# or "pallas" (`lm.decode_attention`, one kernel streaming the cache; prefills stay in XLA).
DECODE_ATTENTION = ("xla", "pallas")


class LayerCache(NamedTuple):
    """One layer's cached projections: key [batch, heads, max_len, head_dim], value [batch,
    heads, head_dim, max_len]; int8 caches carry f32 scales [batch, heads, max_len] (None
    otherwise): stored = round(x / scale). Each product's reduced axis is the last (head_dim for
    the logits, max_len for the weighted values): at batch 1 XLA computes these small dots as
    multiply + reduce, and this layout made a step's attention 30% faster than [batch, max_len,
    heads, head_dim] on an H100 (benchmarks/decode_attention_layouts.py)."""
    key: jax.Array
    value: jax.Array
    key_scale: jax.Array | None = None
    value_scale: jax.Array | None = None


def to_cache_layout(key: jax.Array, value: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Projections [batch, steps, heads, ...] -> the cache's layout: key [batch, heads, steps,
    head_dim], value [batch, heads, head_dim, steps] (per-vector scales [batch, steps, heads]
    -> [batch, heads, steps] with `scales_to_cache_layout`)."""
    return jnp.transpose(key, (0, 2, 1, 3)), jnp.transpose(value, (0, 2, 3, 1))


def scales_to_cache_layout(scale: jax.Array) -> jax.Array:
    return jnp.transpose(scale, (0, 2, 1))


def cached_attention(query: jax.Array, cache: LayerCache, bias: jax.Array,
                     mask: jax.Array) -> jax.Array:
    """`reference_attention` of a few queries against a KV cache in its layout (`LayerCache`),
    exact or int8 with scales. The int8 scales never touch the int8 operands of the two
    products: the key scale multiplies the logits (q . s k = s (q . k)), the value scale the
    softmax weights; equal to attention over the dequantized cache up to the rounding of the
    products' inputs to `query.dtype`.

    Args:
      query: [batch, queries, heads, head_dim]; cache: key [batch, heads, keys, head_dim], value
      [batch, heads, head_dim, keys]; bias, mask: broadcastable to [batch, heads, queries, keys].
    Returns:
      [batch, queries, heads, head_dim] in `query.dtype`.
    """
    scale = 1.0 / np.sqrt(query.shape[-1])
    logits = jnp.einsum("bqhd,bhkd->bhqk", query, cache.key.astype(query.dtype),
                        preferred_element_type=jnp.float32)
    if cache.key_scale is not None:
        logits = logits * cache.key_scale[:, :, None, :]
    logits = logits * scale + bias.astype(jnp.float32)
    weights = jax.nn.softmax(jnp.where(mask, logits, _MASKED), axis=-1)
    if cache.value_scale is not None:
        weights = weights * cache.value_scale[:, :, None, :]
    return jnp.einsum("bhqk,bhdk->bqhd", weights.astype(query.dtype),
                      cache.value.astype(query.dtype))


def decode_attention_xla(query: jax.Array, cache: LayerCache, bias: jax.Array,
                         position: jax.Array, key_start: jax.Array | None,
                         limit: int) -> jax.Array:
    """`cached_attention` of queries at positions position, position + 1, ... against cache
    slots [0, limit), keys after a query's position or before its row's `key_start` (int32
    [batch], or None) masked: `SelfAttention.decode`'s XLA path."""
    key_positions = jnp.arange(limit)
    mask = causal_mask(position + jnp.arange(query.shape[1]), key_positions)
    if key_start is not None:
        mask = mask & (key_positions[None, :] >= key_start[:, None])[:, None, None, :]
    scales = lambda s: None if s is None else s[:, :, :limit]  # noqa: E731
    read = LayerCache(cache.key[:, :, :limit], cache.value[..., :limit],
                      scales(cache.key_scale), scales(cache.value_scale))
    return cached_attention(query, read, bias, mask)


class SelfAttention(nnx.Module):
    """Multi-head causal self-attention with separate q/k/v/out projections (no biases, as T5)."""

    def __init__(self, d_model: int, num_heads: int, head_dim: int, *, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.head_dim = head_dim
        in_init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                    in_axis=0, out_axis=(1, 2))
        out_init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                     in_axis=(0, 1), out_axis=2)
        qkv_names = ("embed", "heads", "kv")
        self.query = logical_param(rngs, in_init, (d_model, num_heads, head_dim), qkv_names)
        self.key = logical_param(rngs, in_init, (d_model, num_heads, head_dim), qkv_names)
        self.value = logical_param(rngs, in_init, (d_model, num_heads, head_dim), qkv_names)
        self.out = logical_param(rngs, out_init, (num_heads, head_dim, d_model),
                                 ("heads", "kv", "embed"))

    def _project(self, x: jax.Array, constrain: ActivationConstraint):
        names = ("batch", "length", "heads", "kv")
        project = lambda w: constrain(jnp.einsum("bld,dhk->blhk", x, w[...].astype(x.dtype)), names)
        return project(self.query), project(self.key), project(self.value)

    def _output(self, attended: jax.Array) -> jax.Array:
        return jnp.einsum("blhk,hkd->bld", attended, self.out[...].astype(attended.dtype))

    def __call__(self, x: jax.Array, bias: jax.Array, *, path: str,
                 constrain: ActivationConstraint) -> jax.Array:
        """Full-sequence causal attention.

        Args:
          x: [batch, length, embed] in the compute dtype.
          bias: [1, heads, length, length] relative position bias; a `SplitBias` for the
            `SPLIT_BIAS_PATHS`.
          path: one of `ATTENTION_PATHS`.
        Returns:
          [batch, length, embed].
        """
        query, key, value = self._project(x, constrain)
        if path == "fast":
            attended = fast_causal_attention(query, key, value, bias)
        elif path == "split":
            attended = split_bias_attention(query, key, value, bias.band, bias.far,
                                            unbiased_flash_attention)
        elif path == "band_grad":
            attended = band_grad_attention(query, key, value, bias.band, bias.far)
        elif path == "pallas_bias":
            attended = pallas_bias_attention(query, key, value, bias.band, bias.far)
        elif path == "split_lse":
            attended = split_lse_attention(query, key, value, bias.band, bias.far)
        elif path == "reference":
            positions = jnp.arange(x.shape[1])
            attended = reference_attention(query, key, value, bias, causal_mask(positions, positions))
        else:
            raise ValueError(f"attention path {path!r} is not one of {ATTENTION_PATHS}")
        return self._output(attended)

    def init_cache(self, batch: int, max_len: int, dtype,
                   kv_cache: str = "compute") -> LayerCache:
        key_shape = (batch, self.num_heads, max_len, self.head_dim)
        value_shape = (batch, self.num_heads, self.head_dim, max_len)
        if kv_cache == "compute":
            return LayerCache(jnp.zeros(key_shape, dtype), jnp.zeros(value_shape, dtype))
        if kv_cache == "int8":
            scale = lambda: jnp.ones(key_shape[:3], jnp.float32)
            return LayerCache(jnp.zeros(key_shape, jnp.int8), jnp.zeros(value_shape, jnp.int8),
                              scale(), scale())
        raise ValueError(f"kv_cache {kv_cache!r} is not one of {KV_CACHES}")

    def decode(self, x: jax.Array, bias: jax.Array, cache: LayerCache, position: jax.Array, *,
               constrain: ActivationConstraint, key_start: jax.Array | None = None,
               key_limit: int | None = None,
               attention: str = "xla") -> tuple[jax.Array, LayerCache]:
        """Attention for `steps` new tokens written into the cache at `position`.

        Args:
          x: [batch, steps, embed] embeddings of the tokens at positions position..position+steps-1.
          bias: [1, heads, steps, keys] bias of those queries against the first `keys` cache
            slots, keys = key_limit or max_len.
          cache: keys/values of positions < position (later slots are ignored by the mask).
          position: int32 scalar (may be traced).
          key_start: optional int32 [batch]: keys before it are ignored (left-padded prompts).
          key_limit: static; read only the first `key_limit` cache slots (the caller knows the
            later ones are still empty: position + steps <= key_limit). None: all of them.
          attention: one of `DECODE_ATTENTION`; "pallas" computes a one-token step's attention
            with `pallas_decode_attention` (the same values; more steps: `cached_attention`).
        Returns:
          ([batch, steps, embed], cache with the new keys/values written).
        """
        query, key, value = self._project(x, constrain)
        key_names = ("batch", "heads", "length", "kv")
        value_names = ("batch", "heads", "kv", "length")
        write = lambda old, new, names, at: constrain(jax.lax.dynamic_update_slice(
            old, new.astype(old.dtype), at), names)
        key_at, value_at = (0, 0, position, 0), (0, 0, 0, position)
        if cache.key_scale is None:
            key, value = to_cache_layout(key, value)
            cache = LayerCache(write(cache.key, key, key_names, key_at),
                               write(cache.value, value, value_names, value_at))
        else:
            (key_q, key_s), (value_q, value_s) = quantize_int8(key), quantize_int8(value)
            key_q, value_q = to_cache_layout(key_q, value_q)
            scale_names = key_names[:3]
            cache = LayerCache(
                write(cache.key, key_q, key_names, key_at),
                write(cache.value, value_q, value_names, value_at),
                write(cache.key_scale, scales_to_cache_layout(key_s), scale_names, key_at[:3]),
                write(cache.value_scale, scales_to_cache_layout(value_s), scale_names, key_at[:3]))
        limit = cache.key.shape[2] if key_limit is None else int(key_limit)
        if bias.shape[-1] != limit:
            raise ValueError(f"decode: the bias covers {bias.shape[-1]} keys, expected {limit}")
        if attention not in DECODE_ATTENTION:
            raise ValueError(f"attention {attention!r} is not one of {DECODE_ATTENTION}")
        if attention == "pallas" and x.shape[1] == 1:
            # Imported here: decode_attention builds on this module. It reads the whole cache's
            # first `limit` slots itself (no slice, no mask array).
            from audiolm_jax.lm.decode_attention import pallas_decode_attention  # noqa: PLC0415
            attended = pallas_decode_attention(query, cache, bias, position, key_start, limit)
            return self._output(attended), cache
        attended = decode_attention_xla(query, cache, bias, position, key_start, limit)
        return self._output(attended), cache
