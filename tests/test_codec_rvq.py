"""Residual VQ: exactness, residual refinement, straight-through, EMA, k-means init, restarts,
quantizer dropout."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.codec.rvq import ResidualVectorQuantizer

DIM, CODES, LEVELS = 8, 16, 3


def key(seed):
    # RBG keys compile far faster than threefry on CPU; the RVQ accepts any key type.
    return jax.random.key(seed, impl="rbg")


def frozen_rvq():
    """decay 1 freezes the EMA and threshold 0 disables restarts: only the k-means init moves
    the codebooks. Tests share two hyper-parameter sets so the jitted steps compile twice."""
    return ResidualVectorQuantizer(DIM, LEVELS, CODES, decay=1.0, kmeans_iterations=5,
                                   dead_code_threshold=0.0, quantizer_dropout=True,
                                   rngs=nnx.Rngs(key(0)))


EMA_DECAY, EMA_EPSILON = 0.9, 1e-5


def ema_rvq():
    """Live EMA, restarts below 1 expected assignment per batch, no dropout."""
    return ResidualVectorQuantizer(DIM, LEVELS, CODES, decay=EMA_DECAY, epsilon=EMA_EPSILON,
                                   dead_code_threshold=1.0, quantizer_dropout=False,
                                   rngs=nnx.Rngs(key(0)))


@functools.partial(nnx.jit, static_argnames=("train",))
def run(rvq, x, rng, train):
    return rvq(x, train=train, rng=rng)


BATCH, FRAMES = 16, 3   # one input shape for every jitted call: each step compiles once


def clustered_data(seed, batch=BATCH, frames=FRAMES):
    """[batch, frames, DIM] points around CODES random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CODES, DIM)) * 3.0
    points = (centres[rng.integers(0, CODES, batch * frames)]
              + 0.3 * rng.normal(size=(batch * frames, DIM)))
    return points.reshape(batch, frames, DIM).astype(np.float32)


def test_codebook_holding_the_inputs_quantizes_exactly():
    rvq = frozen_rvq()
    x = np.random.default_rng(0).normal(size=(BATCH, FRAMES, DIM)).astype(np.float32)
    flat = x.reshape(-1, DIM)
    books = np.array(rvq.codebooks[...])
    books[0] = flat[::3][::-1]                  # code i holds input vector 3 * (CODES - 1 - i)
    rvq.codebooks[...] = jnp.asarray(books)
    codes = np.asarray(run(rvq, x, key(0), False).codes).reshape(-1, LEVELS)
    held = np.arange(0, 3 * CODES, 3)
    np.testing.assert_array_equal(codes[held, 0], np.arange(CODES)[::-1])
    np.testing.assert_array_equal(books[0][codes[held, 0]], flat[held])   # zero error at level 0


def test_kmeans_init_once_then_residual_levels_refine():
    rvq = frozen_rvq()
    data = clustered_data(1)
    assert not bool(rvq.initialized[...])
    run(rvq, data, key(1), True)
    assert bool(rvq.initialized[...])
    books = np.array(rvq.codebooks[...])

    # Error after 1, 2, 3 levels, from the full-depth codes (numpy partial sums).
    codes = np.asarray(run(rvq, data, key(2), False).codes)
    partial, errors = np.zeros_like(data), []
    for q in range(LEVELS):
        partial = partial + books[q][codes[..., q]]
        errors.append(float(np.mean((data - partial) ** 2)))
    assert errors[0] < 0.25 * float(np.mean(data ** 2))   # k-means found the clusters
    assert errors[0] > errors[1] > errors[2]

    # A second batch far away must not trigger a second initialisation.
    shifted = data + 50.0
    run(rvq, shifted, key(3), True)
    np.testing.assert_allclose(np.asarray(rvq.codebooks[...]), books, atol=1e-3)
    fresh = frozen_rvq()
    run(fresh, shifted, key(3), True)
    # ...whereas a fresh quantizer initialises its level-0 codes among the shifted points.
    assert np.all(np.asarray(fresh.codebooks[...])[0].mean(axis=1) > 40.0)
    assert np.all(np.abs(books[0].mean(axis=1)) < 10.0)


def test_straight_through_gradient_is_identity():
    rvq = frozen_rvq()
    x = jnp.asarray(clustered_data(2, batch=2, frames=8))
    weights = jnp.asarray(np.random.default_rng(3).normal(size=x.shape).astype(np.float32))
    grad = nnx.jit(lambda q, v, w: jax.grad(lambda u: jnp.sum(q(u).quantized * w))(v))(
        rvq, x, weights)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(weights), rtol=1e-6)


def test_ema_update_matches_numpy_reference():
    decay, eps = EMA_DECAY, EMA_EPSILON
    rvq = ema_rvq()
    rng = np.random.default_rng(4)
    books = rng.normal(size=(LEVELS, CODES, DIM)).astype(np.float32)
    # Usage >= 2 stays above the restart threshold (1) after one decay step even if unused.
    sizes = rng.uniform(2.0, 3.0, size=(LEVELS, CODES)).astype(np.float32)
    sums = books * sizes[..., None]
    rvq.codebooks[...], rvq.cluster_size[...] = jnp.asarray(books), jnp.asarray(sizes)
    rvq.embed_sum[...] = jnp.asarray(sums)
    rvq.initialized[...] = jnp.array(True)
    x = rng.normal(size=(BATCH, FRAMES, DIM)).astype(np.float32)
    run(rvq, x, key(5), True)

    flat = x.reshape(-1, DIM)
    assign = np.argmin(((flat[:, None] - books[0][None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(assign, minlength=CODES).astype(np.float64)
    assigned_sum = np.zeros((CODES, DIM))
    np.add.at(assigned_sum, assign, flat)
    new_size = decay * sizes[0] + (1 - decay) * counts
    new_sum = decay * sums[0] + (1 - decay) * assigned_sum
    smoothed = (new_size + eps) / (new_size.sum() + CODES * eps) * new_size.sum()
    expected = np.where(counts[:, None] > 0, new_sum / smoothed[:, None], books[0])  # unused: kept
    assert 0 < (counts == 0).sum() < CODES   # both branches are exercised
    np.testing.assert_allclose(np.asarray(rvq.cluster_size[...])[0], new_size, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(rvq.codebooks[...])[0], expected, rtol=1e-4, atol=1e-5)
    # Used codes moved toward the mean of the vectors assigned to them.
    used = counts > 0
    means = assigned_sum[used] / counts[used][:, None]
    before = np.linalg.norm(books[0][used] - means, axis=1)
    after = np.linalg.norm(np.asarray(rvq.codebooks[...])[0][used] - means, axis=1)
    assert np.all(after < before)


def test_dead_codes_are_restarted_from_the_batch():
    rvq = ema_rvq()
    rng = np.random.default_rng(6)
    books = rng.normal(size=(LEVELS, CODES, DIM)).astype(np.float32)
    sizes = np.full((LEVELS, CODES), 100.0, np.float32)
    sizes[0, :4] = 0.0                        # codes 0..3 of level 0 are dead...
    books[0, :4] -= 100.0                     # ...and too far away to win any vector now
    rvq.codebooks[...], rvq.cluster_size[...] = jnp.asarray(books), jnp.asarray(sizes)
    rvq.embed_sum[...] = jnp.asarray(books * sizes[..., None])
    rvq.initialized[...] = jnp.array(True)
    x = rng.normal(size=(BATCH, FRAMES, DIM)).astype(np.float32) + 10.0   # far from every code
    out = run(rvq, x, key(7), True)
    new_books = np.asarray(rvq.codebooks[...])[0]
    flat = x.reshape(-1, DIM)
    for code in range(4):   # each restarted code is one of the batch's (level-0) vectors
        assert np.min(np.abs(flat - new_books[code]).max(axis=1)) < 1e-5
    assert np.asarray(rvq.restarts[...]).tolist() == [4, 0, 0]
    assert int(out.metrics["rvq/restarted_codes"]) == 4
    assert np.all(np.asarray(rvq.cluster_size[...])[0, :4] >= 1.0)


def test_quantizer_dropout_samples_levels_per_example():
    rvq = frozen_rvq()                                   # books stay as initialised
    x = clustered_data(8)
    run(rvq, x, key(9), True)                            # first batch: k-means init
    books = np.asarray(rvq.codebooks[...])
    out = run(rvq, x, key(10), True)
    n_q, codes = np.asarray(out.num_quantizers), np.asarray(out.codes)
    assert n_q.min() >= 1 and n_q.max() <= LEVELS and len(set(n_q.tolist())) > 1
    assert codes.shape == (BATCH, FRAMES, LEVELS)
    quantized = np.asarray(out.quantized)
    for example in range(BATCH):   # only the first n_q levels contribute to each example
        expected = sum(books[q][codes[example, :, q]] for q in range(n_q[example]))
        np.testing.assert_allclose(quantized[example], expected, atol=1e-3)


def test_level_count_is_validated():
    rvq = frozen_rvq()
    with pytest.raises(ValueError, match="num_quantizers=4 is out of range"):
        rvq(jnp.zeros((1, 2, DIM)), num_quantizers=4)
    with pytest.raises(ValueError, match="needs an rng"):
        rvq(jnp.zeros((1, 2, DIM)), train=True)
