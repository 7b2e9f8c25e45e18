"""split_lse_attention equals causal attention with the full T5 bias (values and gradients in
queries, keys, values and the bias table), with its far part's flash kernel given the merged
residuals in the backward pass; on the CPU the XLA far kernel stands in for cuDNN's."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.lm.attention import causal_mask, reference_attention
from audiolm_jax.lm.pallas_bias_attention import Blocks, band_backward, band_forward
from audiolm_jax.lm.relative_bias import RelativePositionBias
from audiolm_jax.lm.split_lse_attention import (XLA_BAND, XLA_FAR, BandKernel, _xla_backward,
                                                 _xla_forward, split_lse_attention)

HEADS, DIM = 3, 16


def bias_module(buckets, width):
    module = RelativePositionBias(HEADS, num_buckets=buckets, max_distance=width, rngs=nnx.Rngs(0))
    module.embedding[...] = jax.random.normal(jax.random.key(1), (HEADS, buckets))
    return nnx.split(module)


def operands(length, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.standard_normal((2, length, HEADS, DIM)) * 1.5, dtype)
                 for _ in range(4))


def losses(length, buckets, width):
    """(reference, split_lse): f(q, k, v, bias state, cotangent) = sum(attention * cotangent)."""
    graphdef, _ = bias_module(buckets, width)
    positions = jnp.arange(length)

    def reference(q, k, v, state, cotangent):
        bias = nnx.merge(graphdef, state).square(length)[None]
        out = reference_attention(q, k, v, bias, causal_mask(positions, positions))
        return jnp.sum(out.astype(jnp.float32) * cotangent)

    def split_lse(q, k, v, state, cotangent):
        out = split_lse_attention(q, k, v, *nnx.merge(graphdef, state).split(), far_kernel=XLA_FAR, band_kernel=XLA_BAND)
        return jnp.sum(out.astype(jnp.float32) * cotangent)

    return reference, split_lse


@pytest.mark.parametrize("length,buckets,width", [
    (7, 8, 16), (16, 8, 16), (17, 8, 16), (50, 8, 16), (301, 8, 16), (257, 32, 128)])
def test_values_and_gradients_equal_the_full_bias_reference(length, buckets, width):
    reference, split_lse = losses(length, buckets, width)
    _, state = bias_module(buckets, width)
    q, k, v, cotangent = operands(length)
    grad = lambda f: jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3)))(q, k, v, state, cotangent)  # noqa: E731
    (want_loss, want), (got_loss, got) = grad(reference), grad(split_lse)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=2e-5 * float(jnp.max(jnp.abs(w))))


def test_far_bucket_gradient_is_not_zero_and_matches():
    # Offsets >= width share the last bucket; its gradient is minus the band's sum.
    reference, split_lse = losses(301, 8, 16)
    _, state = bias_module(8, 16)
    q, k, v, cotangent = operands(301, seed=3)
    want, got = (jax.tree.leaves(jax.grad(f, argnums=3)(q, k, v, state, cotangent))[0][:, -1]
                 for f in (reference, split_lse))
    assert float(jnp.min(jnp.abs(want))) > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_bfloat16_close_to_f32():
    reference, split_lse = losses(301, 8, 16)
    _, state = bias_module(8, 16)
    q, k, v, cotangent = operands(301, seed=5)
    want = jax.grad(reference, argnums=(0, 1, 2, 3))(q, k, v, state, cotangent)
    got = jax.grad(split_lse, argnums=(0, 1, 2, 3))(
        *(x.astype(jnp.bfloat16) for x in (q, k, v)), state, cotangent)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert float(jnp.max(jnp.abs(g.astype(jnp.float32) - w)) / jnp.max(jnp.abs(w))) < 0.03


def test_far_kernel_backward_with_its_own_residuals_is_the_plain_gradient():
    # The residual contract the cuDNN pair must meet: backward(out, lse of forward) = the VJP.
    q, k, v, cotangent = operands(33, seed=7)
    scale = 0.25
    out, lse = _xla_forward(q, k, v, scale)
    assert lse.shape == (2, HEADS, 33)
    want = jax.vjp(lambda a, b, c: _xla_forward(a, b, c, scale)[0], q, k, v)[1](cotangent)
    got = _xla_backward(q, k, v, out, lse, cotangent, scale)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=2e-5 * float(jnp.max(jnp.abs(w))))


# The Pallas band kernels in the interpreter, tiles of 16 for a band of 16 (BAND_BLOCKS: 64).
SMALL = Blocks(q=16, k=16, backward_q=16, backward_k=16)
PALLAS_SMALL = BandKernel(partial(band_forward, blocks=SMALL), partial(band_backward, blocks=SMALL))


@pytest.mark.parametrize("length,width", [(7, 16), (40, 16), (77, 16), (77, 32)])
def test_pallas_band_kernels_equal_xla_band(length, width):
    # Forward (out, lse) and, on the same merged-style residuals, the backward's four gradients;
    # a band of 32 makes each block's window three tiles (as 128 with 64-tiles does).
    graphdef, state = bias_module(8, width)
    band = nnx.merge(graphdef, state).split()[0]
    q, k, v, d_out = operands(length, seed=11)
    (out, lse), (want_out, want_lse) = (kernel.forward(q, k, v, band)
                                        for kernel in (PALLAS_SMALL, XLA_BAND))
    np.testing.assert_allclose(out, want_out, atol=1e-5)
    np.testing.assert_allclose(lse, want_lse, atol=1e-5)
    lse = lse + 0.3                  # residuals not the band's own, as a merged softmax gives
    got, want = (kernel.backward(q, k, v, band, out, lse, d_out)
                 for kernel in (PALLAS_SMALL, XLA_BAND))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=2e-5 * float(jnp.max(jnp.abs(w))))


def test_split_lse_with_pallas_band_equals_the_full_bias_reference():
    reference, _ = losses(77, 8, 16)
    graphdef, state = bias_module(8, 16)
    q, k, v, cotangent = operands(77, seed=12)

    def split_lse(q, k, v, state, cotangent):
        out = split_lse_attention(q, k, v, *nnx.merge(graphdef, state).split(),
                                  far_kernel=XLA_FAR, band_kernel=PALLAS_SMALL)
        return jnp.sum(out.astype(jnp.float32) * cotangent)

    grad = lambda f: jax.value_and_grad(f, argnums=(0, 1, 2, 3))(q, k, v, state, cotangent)  # noqa: E731
    (want_loss, want), (got_loss, got) = grad(reference), grad(split_lse)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-5)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, atol=2e-5 * float(jnp.max(jnp.abs(w))))


def test_band_tiles_must_divide_the_band():
    graphdef, state = bias_module(8, 16)
    q, k, v, _ = operands(20)
    with pytest.raises(ValueError, match="must be one size dividing the band width 16"):
        band_forward(q, k, v, nnx.merge(graphdef, state).split()[0],
                     blocks=Blocks(q=32, k=32, backward_q=32, backward_k=32))


@pytest.mark.skipif(not hasattr(jax.sharding, "AbstractDevice"), reason="no AbstractDevice")
def test_band_kernels_lower_for_a_gpu_at_stage_2_shape():
    """Triton lowering (the kernels' MLIR, not PTX) from this CPU host, stage 2's shape with the
    default 64-tiles: an abstract mesh of one H100 makes the target platform CUDA."""
    from jax.sharding import AbstractDevice, AbstractMesh, use_abstract_mesh
    S = jax.ShapeDtypeStruct
    x, band = S((2, 2251, 16, 64), jnp.bfloat16), S((16, 128), jnp.float32)
    lse = S((2, 16, 2251), jnp.float32)
    device = AbstractDevice(device_kind="NVIDIA H100 80GB HBM3", num_cores=None, platform="cuda")
    with use_abstract_mesh(AbstractMesh((1,), ("x",), abstract_device=device)):
        forward = jax.jit(band_forward).trace(x, x, x, band).lower(lowering_platforms=("cuda",))
        backward = jax.jit(band_backward).trace(x, x, x, band, x, lse, x).lower(
            lowering_platforms=("cuda",))
    assert forward.as_text().count("xla.gpu.triton") == 1
    assert backward.as_text().count("xla.gpu.triton") == 2     # d query (+ dS), d key / d value
