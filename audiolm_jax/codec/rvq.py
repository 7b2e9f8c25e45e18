"""Residual vector quantizer with EMA codebooks (SoundStream Sec. III-C, Algorithm 1).

Level q quantizes the residual left by levels < q with its own codebook of N vectors; the code
of a frame is the Q nearest-neighbour indices. Codebooks are not trained by the optimizer:
- k-means initialisation on the first training batch (Lloyd, level by level on the residuals),
- exponential-moving-average updates of cluster sizes and sums (VQ-VAE-2 style, Laplace-smoothed;
  a code assigned nothing in a step keeps its vector),
- dead-code restart: a code whose EMA usage (expected assignments per batch) falls below
  `dead_code_threshold` is replaced by a random residual vector from the current batch,
- quantizer dropout: in training each example uses n_q ~ U{1..Q} levels, so one model serves
  every bitrate,
- straight-through gradients: the output is `x + stop_gradient(quantized - x)`,
- commitment loss `beta * sum_q mean ||r_q - sg(c_q)||^2` (beta = 0.25, the VQ-VAE value;
  SoundStream trains the encoder with this term only, as its codebooks follow the EMA).

All state lives in `QuantizerState` variables (not `nnx.Param`, so `nnx.Optimizer(...,
wrt=nnx.Param)` leaves it alone) and is written by the forward pass when `train=True`.
Everything is jit-friendly: the first-batch initialisation is a `lax.cond` on a stored flag.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx


class QuantizerState(nnx.Variable):
    """RVQ statistics updated by the forward pass, never by the optimizer."""


class RVQOutput(NamedTuple):
    quantized: jax.Array        # [batch, frames, dim] straight-through quantized embeddings
    codes: jax.Array            # int32 [batch, frames, levels]
    commitment_loss: jax.Array  # scalar, already multiplied by the commitment weight
    num_quantizers: jax.Array   # int32 [batch] levels used per example
    metrics: dict               # scalars for logging


def nearest_code(x: jax.Array, codebook: jax.Array) -> jax.Array:
    """Index of the nearest codebook row (squared L2): `[M, D], [N, D] -> int32 [M]`."""
    distances = (jnp.sum(x * x, axis=-1, keepdims=True) - 2.0 * x @ codebook.T
                 + jnp.sum(codebook * codebook, axis=-1)[None, :])
    return jnp.argmin(distances, axis=-1).astype(jnp.int32)


def kmeans(x: jax.Array, num_clusters: int, iterations: int,
           key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Lloyd's algorithm started from random data points.

    `x [M, D]` -> centroids `[N, D]`, counts `[N]` (points per centroid after the last step).
    Empty clusters keep their previous centroid (and then count 0, i.e. start out dead).
    """
    num_points = x.shape[0]
    start = jax.random.choice(key, num_points, (num_clusters,),
                              replace=num_points < num_clusters)
    ones = jnp.ones((num_points,), x.dtype)

    def lloyd_step(_, centroids):
        assignment = nearest_code(x, centroids)
        sums = jax.ops.segment_sum(x, assignment, num_segments=num_clusters)
        counts = jax.ops.segment_sum(ones, assignment, num_segments=num_clusters)
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids)

    centroids = jax.lax.fori_loop(0, iterations, lloyd_step, x[start])
    counts = jax.ops.segment_sum(ones, nearest_code(x, centroids), num_segments=num_clusters)
    return centroids, counts


def ema_update(codebook: jax.Array, cluster_size: jax.Array, embed_sum: jax.Array, x: jax.Array,
               codes: jax.Array, weights: jax.Array, decay: float, epsilon: float):
    """One EMA step of a codebook from the vectors assigned to it.

    codebook `[N, D]`, cluster_size `[N]`, embed_sum `[N, D]`, x `[M, D]`, codes int `[M]`,
    weights `[M]` (0 for vectors whose level was dropped). Returns new
    (cluster_size, embed_sum, codebook). Used codes move to the Laplace-smoothed ratio
    embed_sum / cluster_size; codes assigned nothing this step keep their vector (the smoothed
    ratio would shrink them toward zero as their statistics decay; restarts deal with them).
    """
    num_codes = cluster_size.shape[0]
    counts = jax.ops.segment_sum(weights, codes, num_segments=num_codes)
    sums = jax.ops.segment_sum(x * weights[:, None], codes, num_segments=num_codes)
    cluster_size = decay * cluster_size + (1.0 - decay) * counts
    embed_sum = decay * embed_sum + (1.0 - decay) * sums
    total = jnp.sum(cluster_size)
    smoothed = (cluster_size + epsilon) / (total + num_codes * epsilon) * total
    updated = embed_sum / jnp.maximum(smoothed, epsilon)[:, None]
    return cluster_size, embed_sum, jnp.where(counts[:, None] > 0, updated, codebook)


def restart_dead_codes(codebook: jax.Array, cluster_size: jax.Array, embed_sum: jax.Array,
                       x: jax.Array, weights: jax.Array, threshold: float, key: jax.Array):
    """Replace codes with EMA usage below `threshold` by random vectors of the batch.

    Samples are drawn among vectors with weight > 0. A restarted code gets usage `threshold`
    and the matching sum, so the EMA continues from the new vector. Returns
    (codebook, cluster_size, embed_sum, number of codes restarted).
    """
    dead = cluster_size < threshold
    probs = weights / jnp.maximum(jnp.sum(weights), 1e-12)
    picks = jax.random.choice(key, x.shape[0], (codebook.shape[0],), replace=True, p=probs)
    samples = x[picks]
    codebook = jnp.where(dead[:, None], samples, codebook)
    cluster_size = jnp.where(dead, threshold, cluster_size)
    embed_sum = jnp.where(dead[:, None], samples * threshold, embed_sum)
    return codebook, cluster_size, embed_sum, jnp.sum(dead).astype(jnp.int32)


def _perplexity(codes: jax.Array, weights: jax.Array, num_codes: int) -> jax.Array:
    """exp(entropy) of the code histogram; equals the number of codes used when uniform."""
    counts = jax.ops.segment_sum(weights, codes, num_segments=num_codes)
    probs = counts / jnp.maximum(jnp.sum(counts), 1e-12)
    log_probs = jnp.log(jnp.where(probs > 0, probs, 1.0))
    return jnp.exp(-jnp.sum(probs * log_probs))


class ResidualVectorQuantizer(nnx.Module):
    """`[batch, frames, dim]` embeddings -> codes `[batch, frames, levels]` + quantized vectors."""

    def __init__(self, dim: int, num_quantizers: int, codebook_size: int, *, decay: float = 0.99,
                 epsilon: float = 1e-5, commitment_weight: float = 0.25,
                 kmeans_iterations: int = 10, dead_code_threshold: float = 2.0,
                 quantizer_dropout: bool = True, rngs: nnx.Rngs):
        self.dim = dim
        self.num_quantizers = num_quantizers
        self.codebook_size = codebook_size
        self.decay = decay
        self.epsilon = epsilon
        self.commitment_weight = commitment_weight
        self.kmeans_iterations = kmeans_iterations
        self.dead_code_threshold = dead_code_threshold
        self.quantizer_dropout = quantizer_dropout
        # Random codebooks only matter until the first training batch replaces them by k-means.
        init = jax.random.normal(rngs.params(), (num_quantizers, codebook_size, dim), jnp.float32)
        self.codebooks = QuantizerState(init)
        self.cluster_size = QuantizerState(jnp.ones((num_quantizers, codebook_size), jnp.float32))
        self.embed_sum = QuantizerState(init)
        self.initialized = QuantizerState(jnp.array(False))
        self.restarts = QuantizerState(jnp.zeros((num_quantizers,), jnp.int32))

    def _kmeans_init(self, x: jax.Array, key: jax.Array):
        """Level-by-level k-means on the residuals of `x [M, D]`; new (codebooks, sizes, sums)."""
        codebooks, sizes = [], []
        residual = x
        for key_q in jax.random.split(key, self.num_quantizers):
            centroids, counts = kmeans(residual, self.codebook_size, self.kmeans_iterations, key_q)
            residual = residual - centroids[nearest_code(residual, centroids)]
            codebooks.append(centroids)
            sizes.append(counts)
        codebooks, sizes = jnp.stack(codebooks), jnp.stack(sizes)
        return codebooks, sizes, codebooks * sizes[..., None]

    def _check_levels(self, num_quantizers: int | None) -> int:
        if num_quantizers is None:
            return self.num_quantizers
        if not 1 <= int(num_quantizers) <= self.num_quantizers:
            raise ValueError(f"num_quantizers={num_quantizers} is out of range; this RVQ has "
                             f"{self.num_quantizers} levels, use 1..{self.num_quantizers}")
        return int(num_quantizers)

    def _updated_level(self, book, size, total, residual, idx, weights, key):
        """EMA step then dead-code restart of one level: (codebook, cluster_size, embed_sum,
        codes restarted). A level dropped for every example of the batch keeps its state."""
        new_size, new_total, new_book = ema_update(book, size, total, residual, idx, weights,
                                                   self.decay, self.epsilon)
        new_book, new_size, new_total, dead = restart_dead_codes(
            new_book, new_size, new_total, residual, weights, self.dead_code_threshold, key)
        seen = jnp.sum(weights) > 0
        return (jnp.where(seen, new_book, book), jnp.where(seen, new_size, size),
                jnp.where(seen, new_total, total), jnp.where(seen, dead, 0))

    def lookup(self, codes: jax.Array) -> jax.Array:
        """Sum of the codebook vectors: int `[batch, frames, levels]` -> `[batch, frames, dim]`."""
        levels = self._check_levels(codes.shape[-1])
        codebooks = self.codebooks[...]
        return sum(codebooks[q][codes[..., q]] for q in range(levels))

    def __call__(self, x: jax.Array, *, train: bool = False, rng: jax.Array | None = None,
                 num_quantizers: int | None = None) -> RVQOutput:
        """Quantize `x [batch, frames, dim]`.

        train=True updates the state and needs `rng` (k-means init, dropout, restarts); with
        `num_quantizers=None` it samples n_q per example (quantizer dropout, if enabled).
        `num_quantizers=k` uses the first k levels for every example (codes `[b, t, k]`).
        """
        levels = self._check_levels(num_quantizers)
        batch, frames, dim = x.shape
        flat = x.reshape(-1, dim).astype(jnp.float32)
        flat_const = jax.lax.stop_gradient(flat)
        if train:
            if rng is None:
                raise ValueError("ResidualVectorQuantizer(train=True) needs an rng key")
            key_init, key_dropout, key_restart = jax.random.split(rng, 3)
            stored = (self.codebooks[...], self.cluster_size[...], self.embed_sum[...])
            codebooks, cluster_size, embed_sum = jax.lax.cond(
                self.initialized[...], lambda: stored,
                lambda: self._kmeans_init(flat_const, key_init))
            if self.quantizer_dropout and num_quantizers is None:
                n_q = jax.random.randint(key_dropout, (batch,), 1, self.num_quantizers + 1)
            else:
                n_q = jnp.full((batch,), levels, jnp.int32)
            restart_keys = jax.random.split(key_restart, levels)
        else:
            codebooks = self.codebooks[...]
            n_q = jnp.full((batch,), levels, jnp.int32)
        codebooks = jax.lax.stop_gradient(codebooks)

        quantized = jnp.zeros_like(flat_const)
        codes, perplexities, commitment = [], [], jnp.zeros((), jnp.float32)
        new_sizes, new_sums, new_books, dead_counts = [], [], [], []
        for q in range(levels):
            residual = flat - quantized  # carries the encoder gradient for the commitment term
            residual_const = jax.lax.stop_gradient(residual)
            idx = nearest_code(residual_const, codebooks[q])
            chosen = codebooks[q][idx]
            weights = jnp.repeat((q < n_q).astype(jnp.float32), frames)  # [batch * frames]
            active = jnp.maximum(jnp.sum(weights), 1.0)
            commitment += jnp.sum(weights * jnp.sum((residual - chosen) ** 2, -1)) / (active * dim)
            quantized = quantized + chosen * weights[:, None]
            codes.append(idx)
            perplexities.append(_perplexity(idx, weights, self.codebook_size))
            if train:
                updated = self._updated_level(codebooks[q], cluster_size[q], embed_sum[q],
                                              residual_const, idx, weights, restart_keys[q])
                for collected, value in zip((new_books, new_sizes, new_sums, dead_counts), updated):
                    collected.append(value)

        if train:
            untouched = slice(levels, None)
            self.codebooks[...] = jnp.concatenate([jnp.stack(new_books), codebooks[untouched]])
            self.cluster_size[...] = jnp.concatenate([jnp.stack(new_sizes),
                                                      cluster_size[untouched]])
            self.embed_sum[...] = jnp.concatenate([jnp.stack(new_sums), embed_sum[untouched]])
            self.initialized[...] = jnp.array(True)
            dead_counts = jnp.stack(dead_counts)
            self.restarts[...] = self.restarts[...].at[:levels].add(dead_counts)

        quantized = quantized.reshape(batch, frames, dim)
        straight_through = x + jax.lax.stop_gradient(quantized.astype(x.dtype) - x)
        metrics = {
            "rvq/perplexity_mean": jnp.mean(jnp.stack(perplexities)),
            "rvq/num_quantizers_mean": jnp.mean(n_q.astype(jnp.float32)),
            "rvq/quantization_error": jnp.mean((flat_const - quantized.reshape(-1, dim)) ** 2),
        }
        if train:
            metrics["rvq/restarted_codes"] = jnp.sum(dead_counts).astype(jnp.float32)
        return RVQOutput(
            quantized=straight_through,
            codes=jnp.stack(codes, axis=-1).reshape(batch, frames, levels),
            commitment_loss=self.commitment_weight * commitment,
            num_quantizers=n_q,
            metrics=metrics)
