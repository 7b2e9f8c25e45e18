"""Decoder-only Transformer used by all three AudioLM stages (paper sec. III-C, IV-B).

Pre-norm blocks (T5 RMSNorm, no biases): x + Attn(Norm(x)) then x + FF(Norm(x)), one T5
relative position bias shared by every layer, a final norm and the output projection.
Parameters are f32 with logical axis names; compute runs in `config.dtype` with f32 softmax,
norms and logits. Dropout is functional: pass `dropout_rng` with `train=True`; the model holds
no RNG state, so `train=False` is deterministic.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from audiolm_jax.dropout import dropout
from audiolm_jax.lm.attention import (SPLIT_BIAS_PATHS, ActivationConstraint, LayerCache,
                                      SelfAttention, SplitBias)
from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.mixed_precision import einsum_f32_out
from audiolm_jax.lm.params import logical_param
from audiolm_jax.lm.relative_bias import RelativePositionBias
from audiolm_jax.lm.sharding_hook import no_constraint

KVCache = tuple[LayerCache, ...]  # one entry per layer

_PADDED_VOCAB_LOGIT = -1e9
_ACTIVATION = ("batch", "length", "embed")


def _split(key: jax.Array | None, num: int) -> list:
    return [None] * num if key is None else list(jax.random.split(key, num))


class RMSNorm(nnx.Module):
    """T5 LayerNorm: scale only, no mean subtraction, statistics in f32."""

    def __init__(self, features: int, epsilon: float, *, rngs: nnx.Rngs):
        self.epsilon = epsilon
        self.scale = logical_param(rngs, nnx.initializers.ones, (features,), ("embed",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return (normed * self.scale[...]).astype(x.dtype)


class FeedForward(nnx.Module):
    """GELU (T5.0) or gated GELU (T5.1.1) MLP: [batch, length, embed] -> same."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.gated = config.feed_forward == "gated_gelu"
        self.dropout_rate = config.dropout_rate
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
        d, f = config.d_model, config.d_ff
        self.wi_0 = logical_param(rngs, init, (d, f), ("embed", "mlp"))
        self.wi_1 = logical_param(rngs, init, (d, f), ("embed", "mlp")) if self.gated else None
        self.wo = logical_param(rngs, init, (f, d), ("mlp", "embed"))

    def __call__(self, x: jax.Array, key: jax.Array | None, constrain: ActivationConstraint) -> jax.Array:
        dense = lambda w: x @ w[...].astype(x.dtype)
        hidden = jax.nn.gelu(dense(self.wi_0))
        if self.gated:
            hidden = hidden * dense(self.wi_1)
        hidden = constrain(dropout(hidden, self.dropout_rate, key), ("batch", "length", "mlp"))
        return hidden @ self.wo[...].astype(x.dtype)


class DecoderBlock(nnx.Module):
    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.dropout_rate = config.dropout_rate
        self.attention_path = config.attention
        self.attention_norm = RMSNorm(config.d_model, config.norm_epsilon, rngs=rngs)
        self.attention = SelfAttention(config.d_model, config.num_heads, config.head_dim, rngs=rngs)
        self.feed_forward_norm = RMSNorm(config.d_model, config.norm_epsilon, rngs=rngs)
        self.feed_forward = FeedForward(config, rngs=rngs)

    def __call__(self, x: jax.Array, bias: jax.Array, key: jax.Array | None,
                 constrain: ActivationConstraint) -> jax.Array:
        """[batch, length, embed] -> same; `key` None disables dropout."""
        attention_key, hidden_key, output_key = _split(key, 3)
        attended = self.attention(self.attention_norm(x), bias, path=self.attention_path,
                                  constrain=constrain)
        x = constrain(x + dropout(attended, self.dropout_rate, attention_key), _ACTIVATION)
        fed = self.feed_forward(self.feed_forward_norm(x), hidden_key, constrain)
        return constrain(x + dropout(fed, self.dropout_rate, output_key), _ACTIVATION)

    def decode(self, x: jax.Array, bias: jax.Array, cache: LayerCache, position: jax.Array,
               constrain: ActivationConstraint, key_start: jax.Array | None = None,
               key_limit: int | None = None,
               attention: str = "xla") -> tuple[jax.Array, LayerCache]:
        attended, cache = self.attention.decode(self.attention_norm(x), bias, cache, position,
                                                constrain=constrain, key_start=key_start,
                                                key_limit=key_limit, attention=attention)
        x = x + attended
        return x + self.feed_forward(self.feed_forward_norm(x), None, constrain), cache


class Transformer(nnx.Module):
    """Token ids [batch, length] -> next-token logits [batch, length, padded_vocab] (f32)."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs,
                 constrain: ActivationConstraint = no_constraint):
        self.config = config
        self.constrain = constrain
        vocab, d = config.padded_vocab_size, config.d_model
        self.embedding = logical_param(rngs, nnx.initializers.normal(1.0), (vocab, d), ("vocab", "embed"))
        self.relative_bias = RelativePositionBias(
            config.num_heads, num_buckets=config.relative_buckets,
            max_distance=config.relative_max_distance, rngs=rngs)
        self.blocks = nnx.List([DecoderBlock(config, rngs=rngs) for _ in range(config.num_layers)])
        self.final_norm = RMSNorm(d, config.norm_epsilon, rngs=rngs)
        self.logits_kernel = None if config.tie_embeddings else logical_param(
            rngs, nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"),
            (d, vocab), ("embed", "vocab"))

    def _embed(self, tokens: jax.Array) -> jax.Array:
        x = jnp.take(self.embedding[...], tokens, axis=0).astype(self.config.compute_dtype)
        return self.constrain(x, _ACTIVATION)

    def _logits(self, x: jax.Array, window: tuple[jax.Array, int] | None = None) -> jax.Array:
        """Logits over the padded vocabulary, or over the ids [start, start + width) of
        `window` (start traced, width static; the caller keeps it inside the padded vocabulary):
        a decoding step whose next id is known to lie in a range reads only those columns."""
        x = self.final_norm(x)
        start, width = (0, self.config.padded_vocab_size) if window is None else window
        tied = self.logits_kernel is None
        weight, vocab_axis = (self.embedding, 0) if tied else (self.logits_kernel, 1)
        weight = weight[...].astype(x.dtype)
        if window is not None:
            weight = jax.lax.dynamic_slice_in_dim(weight, start, width, axis=vocab_axis)
        logits = einsum_f32_out("bld,vd->blv" if tied else "bld,dv->blv", x, weight)
        if tied:
            logits = logits * self.config.d_model ** -0.5
        if self.config.padded_vocab_size != self.config.vocab_size:
            real = start + jnp.arange(width) < self.config.vocab_size
            logits = jnp.where(real, logits, _PADDED_VOCAB_LOGIT)
        return self.constrain(logits, ("batch", "length", "vocab"))

    def __call__(self, tokens: jax.Array, *, train: bool = False,
                 dropout_rng: jax.Array | None = None) -> jax.Array:
        """Causal forward pass.

        Args:
          tokens: int [batch, length] input ids (already shifted right; see layouts).
          train: enables dropout; then `dropout_rng` is required when dropout_rate > 0.
        Returns:
          float32 [batch, length, padded_vocab]; padded ids get -1e9.
        """
        config = self.config
        if train and config.dropout_rate > 0 and dropout_rng is None:
            raise ValueError("Transformer(train=True) needs dropout_rng (a jax.random key) when "
                             f"dropout_rate={config.dropout_rate}; pass one or set train=False")
        keys = _split(dropout_rng if train else None, config.num_layers + 2)
        x = dropout(self._embed(tokens), config.dropout_rate, keys[0])
        if config.attention in SPLIT_BIAS_PATHS:
            bias = SplitBias(*self.relative_bias.split())
        else:
            bias = self.relative_bias.square(tokens.shape[1])[None].astype(x.dtype)
        run_block = self._block_runner()
        for block, key in zip(self.blocks, keys[1:-1]):
            x = run_block(block, x, bias, key)
        return self._logits(dropout(x, config.dropout_rate, keys[-1]))

    def _block_runner(self):
        constrain = self.constrain

        def run(block: DecoderBlock, x, bias, key):
            return block(x, bias, key, constrain)

        if self.config.remat == "none":
            return run
        policy = (None if self.config.remat == "full"
                  else jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
        return nnx.remat(run, policy=policy)

    def init_cache(self, batch: int, max_len: int, kv_cache: str = "compute") -> KVCache:
        """Empty KV cache for sequences of up to `max_len` tokens, in the compute dtype or int8
        with scales (`attention.KV_CACHES`)."""
        return tuple(block.attention.init_cache(batch, max_len, self.config.compute_dtype,
                                                kv_cache) for block in self.blocks)

    def decode_step(self, tokens: jax.Array, cache: KVCache, position: jax.Array | int,
                    key_start: jax.Array | None = None, key_limit: int | None = None,
                    logit_window: tuple[jax.Array, int] | None = None,
                    attention: str = "xla") -> tuple[jax.Array, KVCache]:
        """Logits for `tokens` placed at positions position.. using (and filling) the cache.

        Prefill is a call with the whole prompt at position 0; sampling then calls it with
        [batch, 1] tokens at increasing positions. Shapes are static, so it runs inside
        `lax.scan`/`while_loop` with a traced `position`. Dropout is off. Logits equal the
        full forward pass to ~1e-6 in f32 (on GPUs under
        `jax.default_matmul_precision("highest")`; the default TF32 matmuls differ by ~1e-3).

        Args:
          tokens: int [batch, steps].
          cache: from `init_cache` or a previous call; slots >= position are overwritten.
          position: int32 scalar, absolute position of tokens[:, 0].
          key_start: optional int32 [batch], the first real position of each row: keys before
            it are masked out, so prompts left-padded to one length decode as if unpadded (the
            relative bias only sees offsets). None: every key counts.
          key_limit: static; attend to (and read) only the first `key_limit` cache slots, which
            must hold every position up to position + steps - 1 (the caller's guarantee: the
            later slots are empty and masked anyway, so the logits are the same). None: all.
          logit_window: (start, width): logits of the ids [start, start + width) only (start an
            int32 scalar in [0, padded_vocab - width], width static). None: every id.
          attention: "xla" or "pallas", how one-token steps attend to the cache
            (`attention.DECODE_ATTENTION`; the same logits).
        Returns:
          (float32 [batch, steps, width or padded_vocab], updated cache).
        """
        position = jnp.asarray(position, jnp.int32)
        x = self._embed(tokens)
        max_len = cache[0].key.shape[2]
        keys = max_len if key_limit is None else int(key_limit)
        if not tokens.shape[1] <= keys <= max_len:
            raise ValueError(f"decode_step: key_limit {key_limit} must lie in [{tokens.shape[1]}, "
                             f"{max_len}] (the steps decoded, the cache length)")
        query_positions = position + jnp.arange(tokens.shape[1])
        bias = self.relative_bias(query_positions, jnp.arange(keys))[None].astype(x.dtype)
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache):
            x, layer_cache = block.decode(x, bias, layer_cache, position, self.constrain,
                                          key_start, key_limit, attention)
            new_cache.append(layer_cache)
        return self._logits(x, logit_window), tuple(new_cache)
