"""Causal attention without a bias on TPUs: the Pallas splash-attention kernel.

XLA's attention on a TPU keeps every [length, length] score matrix of a layer for the backward
pass: a paper-size stage-2 step at 16 sequences of 2251 per chip asks for 92 GB of temporaries
on a 32 GB v4 (docs/RESULTS.md). A flash kernel keeps O(length) per head; splash attention is
JAX's own (`jax.experimental.pallas.ops.tpu.splash_attention`), forward and backward. It takes
no learned bias, which is what `split_attention` provides for: the T5 bias goes on the band in
XLA and this kernel does the rest.

The kernel works on one example at a time ([heads, length, head_dim]); under a device mesh (the
abstract mesh the training program traces under) it runs inside `shard_map`
(`lm/kernel_sharding.py`), as GSPMD cannot partition a Pallas call.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from audiolm_jax.lm.kernel_sharding import per_shard

BLOCK = 128          # splash's default tiles: lengths are padded to a multiple


def _kernel(heads: int, length: int, interpret: bool):
    # Built per trace, not cached: the kernel holds the mask's block tables as arrays, which a
    # cache would carry from one trace into another.
    from jax.experimental.pallas.ops.tpu.splash_attention import (splash_attention_kernel,
                                                                  splash_attention_mask)
    causal = splash_attention_mask.CausalMask((length, length))
    mask = splash_attention_mask.MultiHeadMask([causal] * heads)
    return splash_attention_kernel.make_splash_mha(mask, head_shards=1, q_seq_shards=1,
                                                   interpret=interpret)


def _local(query, key, value, *, interpret):
    """[b, t, h, d] (t a multiple of BLOCK; query pre-scaled) -> [b, t, h, dv]."""
    kernel = _kernel(query.shape[2], query.shape[1], interpret)
    heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731
    out = jax.vmap(kernel)(heads_first(query), heads_first(key), heads_first(value))
    return jnp.swapaxes(out, 1, 2)


def splash_causal_attention(query: jax.Array, key: jax.Array, value: jax.Array, scale: float,
                            *, interpret: bool = False) -> jax.Array:
    """softmax(scale q k^T, causal) v with the splash kernel; value may be wider than query/key.

    Args:
      query, key: [batch, length, heads, head_dim]; value: [batch, length, heads, value_dim].
      interpret: run the kernel in the Pallas interpreter (any backend; tests on the CPU).
    Returns:
      [batch, length, heads, value_dim] in `value.dtype`.
    """
    length = query.shape[1]
    pad = ((0, 0), (0, -length % BLOCK), (0, 0), (0, 0))
    # Padded keys come after every real query, so the causal mask hides them; padded query rows
    # are dropped. The kernel does not scale the logits itself.
    query = jnp.pad(query * jnp.asarray(scale, query.dtype), pad)
    key, value = jnp.pad(key, pad), jnp.pad(value, pad)
    local = per_shard(functools.partial(_local, interpret=interpret), query.shape[0],
                      query.shape[2], "xxx", "x")
    return local(query, key, value)[:, :length].astype(value.dtype)


def target_platform() -> str:
    """The platform the code being traced will run on: the abstract mesh's (which an ahead-of-
    time compile for a TPU topology sets on a CPU host), else the default backend's."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else getattr(mesh, "abstract_device", None)
    return device.platform if device is not None else jax.default_backend()
