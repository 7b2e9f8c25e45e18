"""k-means (full Lloyd, mini-batch, k-means++), sharded over 8 simulated devices, and streamed
feature standardisation."""
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from audiolm_jax.semantic.kmeans import kmeans_assign, kmeans_fit
from audiolm_jax.semantic.standardize import (
    batch_moments,
    empty_moments,
    mean_and_std,
    merge_moments,
    update_moments,
)


def _blobs(n=4096, k=6, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 8.0
    labels = rng.integers(0, k, n)
    return (centers[labels] + rng.normal(size=(n, d))).astype(np.float32), centers, labels


def _lloyd_numpy(x, centroids, iters):
    """Reference Lloyd iterations (float64); empty clusters keep their centre."""
    c = np.asarray(centroids, np.float64)
    history = []
    for _ in range(iters):
        d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)
        ids = d2.argmin(1)
        history.append(d2[np.arange(len(x)), ids].sum())
        for j in range(len(c)):
            if (ids == j).any():
                c[j] = x[ids == j].mean(0)
    return c, np.array(history)


LLOYD = dict(iters=8, chunk_size=512)
MINIBATCH = dict(iters=40, batch_size=256)


@pytest.fixture(scope="module")
def blobs():
    return _blobs()


@pytest.fixture(scope="module")
def fits(blobs):
    """Full-batch and mini-batch fits on unsharded data (shared: compiling dominates)."""
    x = blobs[0]
    return {"lloyd": kmeans_fit(x, 6, jax.random.key(0), **LLOYD),
            "minibatch": kmeans_fit(x, 6, jax.random.key(0), **MINIBATCH)}


def test_lloyd_recovers_blob_centres_and_matches_numpy(blobs, fits):
    x, centers, labels = blobs
    result = fits["lloyd"]
    found = np.asarray(result.centroids)
    # Every true centre has a fitted centroid within 0.2 (noise std 1, ~680 points each).
    dist = np.linalg.norm(centers[:, None] - found[None], axis=-1)
    assert dist.min(1).max() < 0.2
    # Inertia is non-increasing, and the final value matches the reference Lloyd from the same seed.
    history = np.append(np.asarray(result.inertia_history), float(result.inertia))
    assert np.all(np.diff(history) <= 1e-5 * history[:-1])
    init = kmeans_fit(x, 6, jax.random.key(0), iters=0, chunk_size=512).centroids
    ref, ref_history = _lloyd_numpy(x.astype(np.float64), np.asarray(init), 8)
    np.testing.assert_allclose(found, ref, atol=1e-3)
    np.testing.assert_allclose(result.inertia_history, ref_history, rtol=1e-4)
    assert int(result.counts.sum()) == len(x)


def test_inertia_within_one_percent_of_scikit_learn():
    """The issue's bar, at equal effort: on a toy set of overlapping clusters (where seeding
    decides the local optimum), the best of 4 seedings + Lloyd reaches the inertia of
    scikit-learn's best of 4 (n_init=4) within 1%. Plain k-means++ (one draw per step, before
    greedy seeding) stayed 12% above."""
    from sklearn.cluster import KMeans

    x, _, _ = _blobs(n=3000, k=12, d=6, seed=3)
    x = x + np.random.default_rng(4).normal(size=x.shape).astype(np.float32) * 3.0
    ours = min(float(kmeans_fit(x, 12, jax.random.key(s), iters=30, chunk_size=1024).inertia)
               for s in range(4))
    ref = KMeans(n_clusters=12, n_init=4, random_state=0).fit(x.astype(np.float64)).inertia_
    assert ours <= 1.01 * ref, (ours, ref)


def test_kmeans_plus_plus_spreads_seeds():
    # Centres 60 * sqrt(2) apart, noise std 1: a second seed in an already seeded blob has
    # probability ~ 16 / 7200 per draw under D^2 sampling (uniform seeding: 1/6 per draw).
    rng = np.random.default_rng(2)
    centers = 60.0 * np.eye(6, 8)
    x = (centers[rng.integers(0, 6, 3000)] + rng.normal(size=(3000, 8))).astype(np.float32)
    seeds = np.asarray(kmeans_fit(x, 6, jax.random.key(3), iters=0).centroids)
    # Seeds are data points, and D^2 sampling puts them in distinct blobs.
    assert all(np.isclose(x, s, atol=1e-5).all(1).any() for s in seeds)
    blob_of_seed = np.linalg.norm(seeds[:, None] - centers[None], axis=-1).argmin(1)
    assert len(set(blob_of_seed.tolist())) == 6


def test_sharded_fit_equals_unsharded(blobs, fits):
    x, _, _ = blobs
    assert len(jax.devices()) == 8
    mesh = jax.make_mesh((8,), ("data",))  # Explicit axes, jax's default
    xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
    for name, args in (("lloyd", LLOYD), ("minibatch", MINIBATCH)):
        plain = fits[name]
        sharded = kmeans_fit(xs, 6, jax.random.key(0), **args)
        np.testing.assert_allclose(sharded.centroids, plain.centroids, atol=1e-4)
        np.testing.assert_allclose(sharded.inertia, plain.inertia, rtol=1e-5)
        np.testing.assert_array_equal(sharded.counts, plain.counts)
    ids, _ = kmeans_assign(xs, plain.centroids, chunk_size=512)
    np.testing.assert_array_equal(ids, kmeans_assign(x, plain.centroids, chunk_size=512)[0])


def test_minibatch_converges_close_to_lloyd(blobs, fits):
    x, centers, _ = blobs
    result = fits["minibatch"]
    dist = np.linalg.norm(centers[:, None] - np.asarray(result.centroids)[None], axis=-1)
    assert dist.min(1).max() < 0.3
    assert float(result.inertia) < 1.02 * float(fits["lloyd"].inertia)


def test_assign_is_chunking_invariant_and_exact():
    x, _, _ = _blobs(n=1000, seed=1)  # 1000 is not a multiple of the chunk: padding is dropped
    c = x[:7]
    ids, d2 = kmeans_assign(x, c, chunk_size=96)
    ref = ((x[:, None] - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(ids, ref.argmin(1))
    np.testing.assert_allclose(d2, ref.min(1), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(ids, kmeans_assign(x, c, chunk_size=4096)[0])


def test_fit_errors():
    with pytest.raises(ValueError, match="n >= k"):
        kmeans_fit(np.zeros((3, 2)), 4, jax.random.key(0))
    with pytest.raises(ValueError, match="expected"):
        kmeans_fit(np.zeros((10, 2)), 4, jax.random.key(0), init=np.zeros((3, 2)))


def test_streamed_moments_equal_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=3.0, scale=[1.0, 5.0, 0.1], size=(1000, 3))
    m = empty_moments(3)
    for part in np.array_split(x, [1, 17, 400, 401, 999]):  # uneven batches, one of size 1
        m = update_moments(m, part)
    mean, std = mean_and_std(m)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, x.std(0), rtol=1e-6)
    # Merging partial results (e.g. from two hosts) gives the same as one pass.
    merged = merge_moments(batch_moments(x[:300]), batch_moments(x[300:]))
    np.testing.assert_allclose(merged.m2, m.m2, rtol=1e-9)
    # `valid` drops padding vectors.
    padded = np.concatenate([x, np.full((5, 3), 1e6)])
    valid = np.arange(len(padded)) < len(x)
    np.testing.assert_allclose(mean_and_std(batch_moments(padded, valid))[0], x.mean(0), rtol=1e-6)
    with pytest.raises(ValueError, match="no vectors"):
        mean_and_std(empty_moments(3))
