"""Hyperparameters of the stage language model (one decoder-only Transformer per stage).

Paper values (sec. IV-B): 12 layers, 16 heads, d_model 1024, feed-forward 4096, dropout 0.1,
T5 relative position bias. Choices the paper leaves open, and what we take:
- feed_forward "gated_gelu" (T5.1.1 / T5X decoder-only default: GELU(x W0) * (x W1)); "gelu" is
  the original single-matrix T5 form.
- untied input embedding and output projection (T5.1.1); `tie_embeddings=True` reuses the
  embedding and scales logits by d_model**-0.5 as T5.0 does.
- vocabulary padded to a multiple of 128 (lane width / shardable); padded ids get -1e9 logits.
Gin: bind as `lm.TransformerConfig.num_layers = 12` (see gin/models/lm_paper.gin).
"""
from __future__ import annotations

import dataclasses

import gin
import jax.numpy as jnp

from audiolm_jax.lm.attention import ATTENTION_PATHS

FEED_FORWARDS = ("gelu", "gated_gelu")
REMAT_POLICIES = ("none", "full", "save_dots")


@gin.configurable(module="lm")
@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int
    num_layers: int = 12
    num_heads: int = 16
    d_model: int = 1024
    d_ff: int = 4096
    dropout_rate: float = 0.1
    relative_buckets: int = 32
    relative_max_distance: int = 128
    feed_forward: str = "gated_gelu"
    tie_embeddings: bool = False
    dtype: str = "float32"          # compute dtype; parameters are always float32
    attention: str = "fast"         # one of ATTENTION_PATHS (lm/attention.py)
    remat: str = "none"             # per-block rematerialisation: none, full, save_dots
    vocab_multiple: int = 128
    norm_epsilon: float = 1e-6

    def __post_init__(self):
        def bad(field, value, fix):
            raise ValueError(f"TransformerConfig.{field}={value!r} is invalid: {fix}")
        if self.vocab_size <= 0:
            bad("vocab_size", self.vocab_size, "give the size of the token vocabulary "
                "(audiolm_jax.lm.layouts.AudioVocabulary(...).size)")
        if self.d_model % self.num_heads:
            bad("d_model", self.d_model, f"must be divisible by num_heads={self.num_heads}")
        if self.feed_forward not in FEED_FORWARDS:
            bad("feed_forward", self.feed_forward, f"use one of {FEED_FORWARDS}")
        if self.attention not in ATTENTION_PATHS:
            bad("attention", self.attention, f"use one of {ATTENTION_PATHS}")
        if self.remat not in REMAT_POLICIES:
            bad("remat", self.remat, f"use one of {REMAT_POLICIES}")
        if not 0.0 <= self.dropout_rate < 1.0:
            bad("dropout_rate", self.dropout_rate, "use a rate in [0, 1)")
        if self.relative_buckets < 4 or self.relative_max_distance <= self.relative_buckets // 2:
            bad("relative_buckets", (self.relative_buckets, self.relative_max_distance),
                "need num_buckets >= 4 and max_distance > num_buckets // 2 (T5: 32, 128)")
        try:
            jnp.dtype(self.dtype)
        except TypeError:
            bad("dtype", self.dtype, "use a JAX dtype name such as 'float32' or 'bfloat16'")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def padded_vocab_size(self) -> int:
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)
