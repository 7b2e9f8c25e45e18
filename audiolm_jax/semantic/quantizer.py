"""w2v-BERT's learned quantizer: Gumbel-softmax product quantisation (wav2vec 2.0, section 2.2).

Features z [batch, frames, embed] are mapped to logits over `groups` codebooks of `entries` each;
in training a code per group is drawn with the straight-through Gumbel-softmax (hard one-hot
forward, softmax((logits + g) / tau) backward), in evaluation the argmax is taken. The chosen
codewords (each codevector_dim / groups wide) are concatenated into the quantised vector, the
contrastive task's target; the argmax ids are the MLM task's targets. The temperature tau is
annealed by `gumbel_temperature(step)` (2 -> 0.5, factor 0.999995 per step, as wav2vec 2.0).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from audiolm_jax.semantic import draws
from audiolm_jax.semantic.conformer import partitioned


class Quantized(NamedTuple):
    vectors: jnp.ndarray  # [batch, frames, codevector_dim] chosen codewords, concatenated
    sampled_ids: jnp.ndarray  # int32 [batch, frames, groups] codes behind `vectors`
    ids: jnp.ndarray  # int32 [batch, frames, groups] argmax codes (MLM targets)
    logits: jnp.ndarray  # float32 [batch, frames, groups, entries]


def gumbel_temperature(step, start: float = 2.0, end: float = 0.5, decay: float = 0.999995):
    """Annealed Gumbel temperature max(start * decay^step, end); `step` may be traced."""
    return jnp.maximum(start * jnp.power(decay, jnp.asarray(step, jnp.float32)), end)


def _unit_normal(key: jax.Array, shape, dtype=jnp.float32) -> jnp.ndarray:
    return draws.normal(key, shape, dtype)


class GumbelQuantizer(nnx.Module):
    """Product quantiser with `groups` codebooks of `entries` codewords."""

    def __init__(self, in_dim: int, groups: int, entries: int, codevector_dim: int, *,
                 rngs: nnx.Rngs, dtype=jnp.float32):
        if codevector_dim % groups:
            raise ValueError(f"GumbelQuantizer: codevector_dim={codevector_dim} is not divisible by "
                             f"groups={groups}; pick a multiple of groups")
        self.groups, self.entries = groups, entries
        # Logit weights ~ N(0, 1) (fairseq's GumbelVectorQuantizer.weight_proj), not lecun's
        # N(0, 1 / in_dim): on LayerNormed features the logits then spread by ~sqrt(in_dim), so
        # from the first step the codes are a deterministic function of the features that the
        # Gumbel noise only perturbs. With logits of std ~1 the noise (std 1.28) decides the
        # sampled code, the contrastive targets are random, and the diversity loss flattens the
        # softmax for good (the small-world run's code_perplexity 318/320, accuracy ~chance).
        self.to_logits = nnx.Linear(
            in_dim, groups * entries, dtype=dtype, param_dtype=jnp.float32,
            kernel_init=partitioned(_unit_normal, ("embed", "vocab")),
            bias_init=partitioned(nnx.initializers.zeros_init(), ("vocab",)), rngs=rngs)
        init = partitioned(nnx.initializers.uniform(1.0), (None, "vocab", None))
        self.codebook = nnx.Param(init(rngs.params(), (groups, entries, codevector_dim // groups),
                                       jnp.float32))

    def __call__(self, z: jnp.ndarray, tau=1.0, key: jax.Array | None = None) -> Quantized:
        """z: [batch, frames, embed]; key None = evaluation (argmax, no noise)."""
        logits = self.to_logits(z).astype(jnp.float32)
        logits = logits.reshape(*z.shape[:-1], self.groups, self.entries)
        ids = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        if key is None:
            sampled_ids, weights = ids, jax.nn.one_hot(ids, self.entries, dtype=jnp.float32)
        else:
            noisy = logits + draws.gumbel(key, logits.shape)
            sampled_ids = jnp.argmax(noisy, axis=-1).astype(jnp.int32)
            hard = jax.nn.one_hot(sampled_ids, self.entries, dtype=jnp.float32)
            soft = jax.nn.softmax(noisy / tau, axis=-1)
            weights = hard + soft - jax.lax.stop_gradient(soft)  # straight-through
        codewords = jnp.einsum("...gv,gvc->...gc", weights, self.codebook[...])
        vectors = codewords.reshape(*z.shape[:-1], -1)
        return Quantized(vectors, sampled_ids, ids, logits)
