"""w2v-BERT pretraining: span masking, contrastive / diversity / MLM losses, and that training works."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from audiolm_jax.semantic import masking, objectives
from audiolm_jax.semantic.masking import expected_mask_fraction
from audiolm_jax.semantic.objectives import batch_loss
from audiolm_jax.semantic.quantizer import GumbelQuantizer, gumbel_temperature
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig

TINY = W2vBertConfig(model_dim=32, num_heads=4, ff_dim=64, num_contrastive_layers=1,
                     num_mlm_layers=2, subsample_channels=8, codebook_groups=2,
                     codebook_entries=16, codevector_dim=16, contrastive_dim=16,
                     num_distractors=10, dropout=0.1)


# Jitted once here: op-by-op execution would compile every primitive separately.
span_mask = jax.jit(masking.span_mask, static_argnums=(1, 2, 3))
sample_distractors = jax.jit(objectives.sample_distractors, static_argnums=(2,))
contrastive_loss = jax.jit(objectives.contrastive_loss, static_argnums=(4, 5))
mlm_loss = jax.jit(objectives.mlm_loss)
diversity_loss = jax.jit(objectives.diversity_loss)


def _runs(row: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    padded = np.concatenate([[False], row, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2])]


def test_span_mask_statistics():
    frames, span, p = 200, 10, 0.065
    mask = np.asarray(span_mask(jax.random.key(0), (2000, frames), p, span))
    expected = expected_mask_fraction(frames, p, span)
    assert 0.45 < expected < 0.5
    assert abs(mask.mean() - expected) < 0.005
    # Spans are contiguous: every run is at least `span` long unless cut by the end.
    for row in mask[:200]:
        for start, length in _runs(row):
            assert length >= span or start + length == frames


def test_span_mask_determinism_padding_and_fallback():
    key = jax.random.key(7)
    a = span_mask(key, (4, 50))
    np.testing.assert_array_equal(a, span_mask(key, (4, 50)))
    assert not np.array_equal(a, span_mask(jax.random.key(8), (4, 50)))
    valid = jnp.arange(50)[None, :] < jnp.array([50, 30, 5, 1])[:, None]
    m = np.asarray(span_mask(key, (4, 50), 0.3, 10, valid))
    assert not (m & ~np.asarray(valid)).any()  # padding is never masked
    # With p = 0 every utterance still gets exactly one span (the fallback start).
    m0 = np.asarray(span_mask(key, (64, 40), 0.0, 10))
    for row in m0:
        runs = _runs(row)
        assert len(runs) == 1 and (runs[0][1] == 10 or sum(row) == 40 - runs[0][0])


def test_distractors_come_from_other_masked_frames_of_the_same_utterance():
    mask = span_mask(jax.random.key(1), (8, 60), 0.05, 10)
    index, usable = sample_distractors(jax.random.key(2), mask, 20)
    mask, index = np.asarray(mask), np.asarray(index)
    assert np.asarray(usable).all()
    for b in range(8):
        for t in np.flatnonzero(mask[b]):
            assert mask[b, index[b, t]].all()
            assert (index[b, t] != t).all()


def test_contrastive_loss_on_known_inputs():
    k, d = 10, 256
    key = jax.random.key(0)
    targets = jax.random.normal(jax.random.key(1), (4, 50, d))
    mask = span_mask(jax.random.key(2), (4, 50), 0.1, 10)
    perfect, acc = contrastive_loss(targets, targets, mask, key, k, 0.1)
    assert perfect < 0.05 and acc == 1.0
    # A context orthogonal to every target: all logits tie, the loss is exactly log(K + 1).
    half = targets.at[..., d // 2:].set(0.0)
    orthogonal = jnp.zeros_like(targets).at[..., d // 2:].set(1.0)
    tie, _ = contrastive_loss(orthogonal, half, mask, key, k, 0.1)
    np.testing.assert_allclose(tie, math.log(k + 1), rtol=1e-5)
    # Random predictions: about log(K + 1).
    noise = jax.random.normal(jax.random.key(3), targets.shape)
    rand, rand_acc = contrastive_loss(noise, targets, mask, key, k, 0.1)
    assert abs(float(rand) - math.log(k + 1)) < 0.3 and rand_acc < 0.3
    # Distractors with the target's own code are not negatives: all codes equal -> nothing to
    # contrast with, loss 0.
    same_ids = jnp.zeros((4, 50, 1), jnp.int32)
    none_left, _ = contrastive_loss(noise, targets, mask, key, k, 0.1, same_ids)
    np.testing.assert_allclose(none_left, 0.0, atol=1e-6)
    # Unmasked frames do not count.
    scrambled = jnp.where(mask[..., None], targets, noise)
    np.testing.assert_allclose(contrastive_loss(scrambled, targets, mask, key, k, 0.1)[0], perfect,
                               rtol=1e-6)


def test_mlm_loss_counts_masked_frames_only():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 30, 2, 16)), jnp.float32)
    ids = jnp.asarray(rng.integers(0, 16, size=(2, 30, 2)), jnp.int32)
    mask = jnp.zeros((2, 30), bool).at[0, 3:9].set(True).at[1, 20:30].set(True)
    loss, _ = mlm_loss(logits, ids, mask)
    logp = jax.nn.log_softmax(logits, -1)
    nll = -np.take_along_axis(np.asarray(logp), np.asarray(ids)[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, nll[np.asarray(mask)].mean(), rtol=1e-6)
    unmasked_changed = jnp.where(mask[..., None, None], logits, 100.0 * logits)
    np.testing.assert_allclose(mlm_loss(unmasked_changed, ids, mask)[0], loss, rtol=1e-6)
    masked_changed = jnp.where(mask[..., None, None], 100.0 * logits, logits)
    assert abs(float(mlm_loss(masked_changed, ids, mask)[0]) - float(loss)) > 1.0
    perfect = jax.nn.one_hot(ids, 16) * 50.0
    l, acc = mlm_loss(perfect, ids, mask)
    assert l < 1e-6 and acc == 1.0


def test_diversity_loss_extremes():
    v = 16
    uniform, ppl = diversity_loss(jnp.zeros((2, 10, 2, v)))
    np.testing.assert_allclose(uniform, 0.0, atol=1e-6)  # every code used: entropy is maximal
    np.testing.assert_allclose(ppl, [v, v], rtol=1e-6)
    collapsed, ppl = diversity_loss(jnp.zeros((2, 10, 2, v)).at[..., 3].set(100.0))
    np.testing.assert_allclose(collapsed, 1.0 - 1.0 / v, atol=1e-5)
    spread = jax.nn.one_hot(jnp.arange(16).reshape(2, 8, 1) % 8, v) * 100.0  # codes 0..7, twice
    partial, ppl = diversity_loss(spread)
    np.testing.assert_allclose(ppl, [8.0], rtol=1e-4)  # 8 codes used evenly
    assert 0.0 < float(partial) < float(collapsed)
    # Padding frames are left out of the average.
    valid = jnp.zeros((2, 8), bool).at[0, :2].set(True)
    np.testing.assert_allclose(diversity_loss(spread, valid)[1], [2.0], rtol=1e-4)  # codes 0, 1


def test_gumbel_quantizer_straight_through_and_schedule():
    q = GumbelQuantizer(8, 2, 4, 6, rngs=nnx.Rngs(0))
    z = jax.random.normal(jax.random.key(1), (3, 5, 8))

    @nnx.jit
    def run(q, z, key):
        train = q(z, 1.0, key)
        grad = nnx.grad(lambda m: jnp.sum(m(z, 1.0, key).vectors ** 2))(q)
        return q(z), train, grad

    ev, tr, grad = run(q, z, jax.random.key(2))
    codebook = np.asarray(q.codebook[...])
    expected = np.concatenate([codebook[g][np.asarray(ev.ids)[..., g]] for g in range(2)], -1)
    np.testing.assert_allclose(ev.vectors, expected, atol=1e-6)
    expected = np.concatenate([codebook[g][np.asarray(tr.sampled_ids)[..., g]] for g in range(2)], -1)
    np.testing.assert_allclose(tr.vectors, expected, atol=1e-6)  # forward is the hard choice
    assert not np.array_equal(tr.sampled_ids, ev.ids)  # Gumbel noise changes some choices
    assert np.abs(np.asarray(grad.to_logits.kernel[...])).sum() > 0  # backward reaches the logits
    assert float(gumbel_temperature(0)) == 2.0
    assert float(gumbel_temperature(10**7)) == 0.5
    assert 0.5 < float(gumbel_temperature(100_000)) < 2.0


def test_adam_steps_reduce_the_pretraining_loss():
    # One block per module and no dropout: compiling the training step dominates this test.
    cfg = dataclasses.replace(TINY, num_contrastive_layers=1, num_mlm_layers=1, dropout=0.0)
    model = W2vBert(cfg, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    t = jnp.arange(2 * 6400).reshape(2, 6400) / 16000.0
    wav = 0.3 * jnp.sin(2 * jnp.pi * jnp.array([[220.0], [330.0]]) * t * (1.0 + t))
    # Any key type works; the counter-based "rbg" keys compile faster than threefry on CPU.
    key = jax.random.key(0, impl="rbg")

    # The trainer's loss_fn form; the second utterance is padded after 5000 samples.
    batch = {"audio": wav, "audio_length": jnp.array([6400, 5000])}

    @nnx.jit
    def step(model, optimizer, batch, key):
        (loss, metrics), grads = nnx.value_and_grad(
            lambda m: batch_loss(m, batch, key, jnp.int32(0)), has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, metrics

    losses = []
    for _ in range(8):
        loss, metrics = step(model, optimizer, batch, key)
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.1, losses
    assert set(metrics) >= {"contrastive_loss", "mlm_loss", "diversity_loss", "code_perplexity"}
