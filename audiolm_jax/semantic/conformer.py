"""Conformer block (Gulati et al. 2020), the layer of w2v-BERT's contrastive and MLM modules.

    x = x + 1/2 FFN(x)          half-step feed-forward (macaron)
    x = x + MHSA_rel(x)         self-attention with Transformer-XL relative positions
    x = x + Conv(x)             pointwise -> GLU -> depthwise -> norm -> swish -> pointwise
    x = x + 1/2 FFN(x)
    x = LayerNorm(x)

Parameters are float32 and carry logical axis names (t5x vocabulary: embed, mlp, heads, kv) as
`out_sharding` metadata, annotation only (`eager_sharding=False`): the trainer maps them to mesh
axes with its rules table and places the state with jit out_shardings, so a model can be built
anywhere (tests, a CPU, `nnx.eval_shape`) without a mesh. `dtype` is the compute dtype (bfloat16 on
accelerators); attention softmax and layer norms run in float32.

Deviation from the paper: the convolution module normalises with LayerNorm, not BatchNorm, so the
block has no running statistics to synchronise across devices and train/eval behave alike.
Dropout is functional (an explicit key, or None for none) so every call is a pure function.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from audiolm_jax.dropout import dropout
from audiolm_jax.semantic import draws

_NEG_INF = -1e9
KERNEL_INIT = draws.lecun_normal  # flax's lecun_normal, drawn flat (faster to compile on CPU)


def partitioned(init, names: Sequence[str | None]):
    """`init` annotated with logical axis `names`, without placing anything on a mesh."""
    return nnx.with_partitioning(init, tuple(names), eager_sharding=False)


def dense(in_features: int, out_features: int, names: tuple[str | None, str | None], *,
          rngs: nnx.Rngs, dtype=jnp.float32, use_bias: bool = True) -> nnx.Linear:
    """A Linear with logical names on kernel [in, out] and bias [out]."""
    return nnx.Linear(
        in_features, out_features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
        kernel_init=partitioned(KERNEL_INIT, names),
        bias_init=partitioned(nnx.initializers.zeros_init(), (names[1],)), rngs=rngs)


def layer_norm(features: int, *, rngs: nnx.Rngs, name: str | None = "embed") -> nnx.LayerNorm:
    """LayerNorm computed in float32 (its output is cast by the next layer's dtype)."""
    return nnx.LayerNorm(
        features, epsilon=1e-6, dtype=jnp.float32, param_dtype=jnp.float32,
        scale_init=partitioned(nnx.initializers.ones_init(), (name,)),
        bias_init=partitioned(nnx.initializers.zeros_init(), (name,)), rngs=rngs)


def _split(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    return [None] * n if key is None else list(jax.random.split(key, n))


@dataclasses.dataclass(frozen=True)
class ConformerConfig:
    """Sizes of one Conformer block."""

    model_dim: int = 1024
    num_heads: int = 8
    ff_dim: int = 4096
    conv_kernel: int = 5
    dropout: float = 0.1

    def __post_init__(self):
        if self.model_dim % self.num_heads:
            raise ValueError(f"ConformerConfig: model_dim={self.model_dim} is not divisible by "
                             f"num_heads={self.num_heads}; pick num_heads dividing model_dim")


class FeedForward(nnx.Module):
    """LayerNorm -> Linear(d, ff) -> swish -> dropout -> Linear(ff, d) -> dropout."""

    def __init__(self, cfg: ConformerConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.norm = layer_norm(cfg.model_dim, rngs=rngs)
        self.up = dense(cfg.model_dim, cfg.ff_dim, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.down = dense(cfg.ff_dim, cfg.model_dim, ("mlp", "embed"), rngs=rngs, dtype=dtype)
        self.rate = cfg.dropout

    def __call__(self, x: jnp.ndarray, key: jax.Array | None = None) -> jnp.ndarray:
        """[batch, length, embed] -> [batch, length, embed]."""
        k1, k2 = _split(key, 2)
        h = dropout(jax.nn.swish(self.up(self.norm(x))), self.rate, k1)
        return dropout(self.down(h), self.rate, k2)


def sinusoid_relative_embedding(length: int, dim: int) -> jnp.ndarray:
    """Sinusoids of relative distances (length-1), ..., 0, ..., -(length-1), in that (descending)
    order: float32 [2 * length - 1, dim]; row c is distance length - 1 - c."""
    distance = jnp.arange(length - 1, -length, -1, dtype=jnp.float32)
    inv_freq = 1.0 / (10000.0 ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    angles = distance[:, None] * inv_freq[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)[:, :dim]


def relative_shift(x: jnp.ndarray) -> jnp.ndarray:
    """Scores by distance -> scores by key (Transformer-XL's shift).

    x[..., i, c] scores query i against distance length - 1 - c; returns y[..., i, j] =
    x[..., i, length - 1 - i + j], the score at distance i - j. Pad, reshape and slice only: unlike
    a gather, its gradient is cheap to compile and run.
    """
    *lead, length, width = x.shape
    padded = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (1, 0)]).reshape(*lead, width + 1, length)
    return padded[..., 1:, :].reshape(*lead, length, width)[..., :length]


class RelativeSelfAttention(nnx.Module):
    """Multi-head self-attention with Transformer-XL relative positions (as the Conformer paper).

    score(i, j) = (q_i + u) . k_j + (q_i + v) . W_r R[i - j], with R sinusoids of the distance and
    u, v learned per head; the [queries, 2 * length - 1] scores by distance are laid out by key
    with `relative_shift`.
    """

    def __init__(self, cfg: ConformerConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        d, h = cfg.model_dim, cfg.num_heads
        self.num_heads, self.head_dim, self.dtype = h, d // h, dtype
        self.norm = layer_norm(d, rngs=rngs)
        init = KERNEL_INIT

        def heads_proj(use_bias: bool):
            return nnx.LinearGeneral(
                d, (h, d // h), use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32,
                kernel_init=partitioned(init, ("embed", "heads", "kv")),
                bias_init=partitioned(nnx.initializers.zeros_init(), ("heads", "kv")), rngs=rngs)

        self.query, self.key, self.value = heads_proj(True), heads_proj(True), heads_proj(True)
        self.pos = heads_proj(False)
        self.out = nnx.LinearGeneral(
            (h, d // h), d, axis=(-2, -1), dtype=dtype, param_dtype=jnp.float32,
            kernel_init=partitioned(init, ("heads", "kv", "embed")),
            bias_init=partitioned(nnx.initializers.zeros_init(), ("embed",)), rngs=rngs)
        zeros = partitioned(nnx.initializers.zeros_init(), ("heads", "kv"))
        self.content_bias = nnx.Param(zeros(rngs.params(), (h, d // h), jnp.float32))
        self.position_bias = nnx.Param(zeros(rngs.params(), (h, d // h), jnp.float32))
        self.rate = cfg.dropout

    def __call__(self, x: jnp.ndarray, valid: jnp.ndarray | None = None,
                 key: jax.Array | None = None) -> jnp.ndarray:
        """x: [batch, length, embed]; valid: bool [batch, length] (False = padding) or None."""
        k_attn, k_out = _split(key, 2)
        length = x.shape[1]
        y = self.norm(x)
        q, k, v = self.query(y), self.key(y), self.value(y)  # [batch, length, heads, kv]
        rel = sinusoid_relative_embedding(length, x.shape[-1])
        r = self.pos(rel)  # [2 * length - 1, heads, kv]
        qu = q + self.content_bias[...].astype(q.dtype)
        qv = q + self.position_bias[...].astype(q.dtype)
        content = jnp.einsum("bqhd,bkhd->bhqk", qu, k, preferred_element_type=jnp.float32)
        by_distance = jnp.einsum("bqhd,rhd->bhqr", qv, r, preferred_element_type=jnp.float32)
        position = relative_shift(by_distance)
        scores = (content + position) / math.sqrt(self.head_dim)
        if valid is not None:
            scores = jnp.where(valid[:, None, None, :], scores, _NEG_INF)
        weights = dropout(jax.nn.softmax(scores, axis=-1), self.rate, k_attn).astype(self.dtype)
        context = jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(self.dtype))
        return dropout(self.out(context), self.rate, k_out)


class ConvModule(nnx.Module):
    """LayerNorm -> pointwise (d -> 2d) -> GLU -> depthwise conv -> LayerNorm -> swish -> pointwise."""

    def __init__(self, cfg: ConformerConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        d = cfg.model_dim
        self.norm = layer_norm(d, rngs=rngs)
        self.pointwise_in = dense(d, 2 * d, ("embed", "mlp"), rngs=rngs, dtype=dtype)
        self.depthwise = nnx.Conv(
            d, d, kernel_size=(cfg.conv_kernel,), padding="SAME", feature_group_count=d,
            dtype=dtype, param_dtype=jnp.float32,
            kernel_init=partitioned(KERNEL_INIT, (None, None, "mlp")),
            bias_init=partitioned(nnx.initializers.zeros_init(), ("mlp",)), rngs=rngs)
        self.depthwise_norm = layer_norm(d, rngs=rngs, name="mlp")
        self.pointwise_out = dense(d, d, ("mlp", "embed"), rngs=rngs, dtype=dtype)
        self.rate = cfg.dropout

    def __call__(self, x: jnp.ndarray, valid: jnp.ndarray | None = None,
                 key: jax.Array | None = None) -> jnp.ndarray:
        """[batch, length, embed] -> [batch, length, embed]; padding is zeroed before the conv."""
        h = jax.nn.glu(self.pointwise_in(self.norm(x)), axis=-1)
        if valid is not None:  # padded frames must not leak into real ones through the kernel
            h = jnp.where(valid[..., None], h, jnp.zeros_like(h))
        h = jax.nn.swish(self.depthwise_norm(self.depthwise(h)))
        return dropout(self.pointwise_out(h), self.rate, key)


class ConformerBlock(nnx.Module):
    """One Conformer block; see the module docstring for the layout."""

    def __init__(self, cfg: ConformerConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.ff_in = FeedForward(cfg, rngs=rngs, dtype=dtype)
        self.attention = RelativeSelfAttention(cfg, rngs=rngs, dtype=dtype)
        self.conv = ConvModule(cfg, rngs=rngs, dtype=dtype)
        self.ff_out = FeedForward(cfg, rngs=rngs, dtype=dtype)
        self.final_norm = layer_norm(cfg.model_dim, rngs=rngs)
        self.dtype = dtype

    def __call__(self, x: jnp.ndarray, valid: jnp.ndarray | None = None,
                 key: jax.Array | None = None) -> jnp.ndarray:
        """x: [batch, length, embed] -> [batch, length, embed] in the compute dtype."""
        k1, k2, k3, k4 = _split(key, 4)
        x = x + 0.5 * self.ff_in(x, k1)
        x = x + self.attention(x, valid, k2)
        x = x + self.conv(x, valid, k3)
        x = x + 0.5 * self.ff_out(x, k4)
        return self.final_norm(x).astype(self.dtype)
