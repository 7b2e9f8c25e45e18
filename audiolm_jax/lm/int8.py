"""Symmetric int8 storage for decoding: KV-cache vectors and weight matrices.

Decoding at small batch reads every weight matrix and the KV cache once per token; int8 halves
their bytes against bf16 (whether a step gets faster depends on the kernels XLA makes of it). Both use one f32 scale per quantised
vector, scale = max |x| / 127, so each stored value is within scale / 2 of the original.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

WEIGHTS = ("compute", "int8")  # how `sampling.decoding_weights` stores the weight matrices


def quantize_int8(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[..., n] -> (int8 [..., n], f32 scale [...]), symmetric per vector over the last axis:
    scale = max |x| / 127 (1 for an all-zero vector), so x ~= int8 * scale within scale / 2."""
    x = x.astype(jnp.float32)
    scale = jnp.max(jnp.abs(x), axis=-1) / 127.0
    scale = jnp.where(scale > 0, scale, 1.0)
    stored = jnp.clip(jnp.round(x / scale[..., None]), -127, 127).astype(jnp.int8)
    return stored, scale


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Int8Weight:
    """A weight matrix [in, ...] as int8 with one scale per output entry (a vector along the
    first, contracted axis of every product the stage Transformer makes). It stands where a
    parameter's array stood: the model reads `w[...].astype(dtype)`, which here dequantises.
    On an H100 (jax 0.11.2) XLA does not fuse that into the product: the loop writes and reads
    the dequantised matrix, slower than bf16 weights (docs/RESULTS.md, session 22)."""
    stored: jax.Array  # int8 [in, ...]
    scale: jax.Array   # f32 [...]: the trailing axes of `stored`

    @classmethod
    def quantize(cls, w: jax.Array) -> "Int8Weight":
        stored, scale = quantize_int8(jnp.moveaxis(w, 0, -1))
        return cls(jnp.moveaxis(stored, -1, 0), scale)

    def __getitem__(self, key):
        if key is not Ellipsis:
            raise TypeError("Int8Weight supports only w[...] (the whole matrix)")
        return self

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stored.shape

    def astype(self, dtype) -> jax.Array:
        return self.stored.astype(dtype) * self.scale.astype(dtype)
