"""The LM's mixed-precision output projection."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audiolm_jax.lm.mixed_precision import einsum_f32_out


def _operands(dtype):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (2, 5, 16)).astype(dtype)
    w = jax.random.normal(kw, (16, 24)).astype(dtype)
    g = jax.random.normal(kg, (2, 5, 24))
    return x, w, g


def test_f32_operands_give_autodiff_gradients_exactly():
    x, w, g = _operands(jnp.float32)
    ours = jax.vjp(lambda a, b: einsum_f32_out("bld,dv->blv", a, b), x, w)
    ref = jax.vjp(lambda a, b: jnp.einsum("bld,dv->blv", a, b), x, w)
    np.testing.assert_array_equal(ours[0], ref[0])
    for a, b in zip(ours[1](g), ref[1](g)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spec,w_shape", [("bld,dv->blv", (16, 24)), ("bld,vd->blv", (24, 16))])
def test_bf16_backward_matches_f32_within_bf16_rounding(spec, w_shape):
    x, _, g = _operands(jnp.bfloat16)
    w = jax.random.normal(jax.random.key(1), w_shape).astype(jnp.bfloat16)
    out, pullback = jax.vjp(lambda a, b: einsum_f32_out(spec, a, b), x, w)
    assert out.dtype == jnp.float32
    dx, dw = pullback(g)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
    x32, w32 = x.astype(jnp.float32), w.astype(jnp.float32)
    _, ref_pullback = jax.vjp(lambda a, b: jnp.einsum(spec, a, b), x32, w32)
    for ours, ref in zip((dx, dw), ref_pullback(g)):
        scale = float(jnp.max(jnp.abs(ref)))
        np.testing.assert_allclose(np.asarray(ours, np.float32), ref, atol=0.02 * scale)


def _dot_operand_dtypes(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    found = []

    def walk(jp):
        for eqn in jp.eqns:
            if eqn.primitive.name == "dot_general":
                found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
            for sub in jax.core.jaxprs_in_params(eqn.params):
                walk(sub)
    walk(jaxpr.jaxpr)
    return found


def test_bf16_backward_matmuls_read_no_f32_operand():
    """What the module exists for: autodiff's own backward promotes to f32 GEMMs."""
    x, w, _ = _operands(jnp.bfloat16)

    def loss(fn):
        return jax.grad(lambda a, b: jnp.sum(jax.nn.log_softmax(fn(a, b))), argnums=(0, 1))

    ours = _dot_operand_dtypes(loss(lambda a, b: einsum_f32_out("bld,dv->blv", a, b)), x, w)
    plain = _dot_operand_dtypes(loss(lambda a, b: jnp.einsum(
        "bld,dv->blv", a, b, preferred_element_type=jnp.float32)), x, w)
    # (the pullback also traces a forward einsum, which XLA drops as dead code)
    assert len(ours) >= 3 and all(d == ("bfloat16", "bfloat16") for d in ours), ours
    assert any("float32" in d for d in plain), plain   # the slow path this replaces
