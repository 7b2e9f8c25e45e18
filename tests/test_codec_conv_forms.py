"""Every form of `codec.conv_forms.conv1d` is the convolution: values and gradients (with
respect to input and kernel) against `lax.conv_general_dilated`, on the codec's kinds of layer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.codec.conv_forms import FORMS, block_diagonal, conv1d, same_padding

# (time, in, out, taps, stride, dilation, groups, padding): the codec's layer kinds, shrunk.
LAYERS = {
    "stem 1 -> C": (40, 1, 8, 7, 1, 1, 1, (6, 0)),
    "dilated residual": (40, 8, 8, 7, 1, 3, 1, (18, 0)),
    "strided down": (40, 8, 16, 8, 4, 1, 1, (4, 0)),
    "head C -> 1": (40, 8, 1, 7, 1, 1, 1, (6, 0)),
    "MelGAN grouped": (64, 16, 64, 41, 4, 1, 4, same_padding(64, 41, 4)),
    "MelGAN grouped, 4 out per group": (32, 16, 16, 41, 4, 1, 4, same_padding(32, 41, 4)),
}


def _applies(form, stride, groups):
    return not (form == "project_shift" and stride != 1) and not (
        form == "supergroup" and groups % 2)


@pytest.mark.parametrize("name", list(LAYERS))
def test_every_form_equals_the_convolution_and_its_gradients(name):
    time, cin, cout, taps, stride, dilation, groups, padding = LAYERS[name]
    rng = np.random.default_rng(len(name))
    x = jnp.asarray(rng.standard_normal((2, time, cin)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((taps, cin // groups, cout)) / np.sqrt(taps * cin),
                    jnp.float32)
    kwargs = dict(stride=stride, dilation=dilation, padding=padding, groups=groups)
    reference = conv1d(x, w, **kwargs)
    cotangent = jnp.asarray(rng.standard_normal(reference.shape), jnp.float32)

    def grads(form):
        return jax.grad(lambda x, w: jnp.sum(conv1d(x, w, form=form, **kwargs) * cotangent),
                        argnums=(0, 1))(x, w)

    dx_ref, dw_ref = grads("xla")
    tested = 0
    for form in FORMS:
        if not _applies(form, stride, groups):
            continue
        tested += 1
        np.testing.assert_allclose(conv1d(x, w, form=form, **kwargs), reference, rtol=1e-4,
                                   atol=1e-5, err_msg=form)
        dx, dw = grads(form)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-5, err_msg=form)
        np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-5, err_msg=form)
    assert tested >= 2   # the reference and at least one other form


def test_xla_form_is_flax_conv_with_same_padding():
    conv = nnx.Conv(16, 64, 41, strides=4, padding="SAME", feature_group_count=4,
                    rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 50, 16)), jnp.float32)
    ours = conv1d(x, conv.kernel[...], stride=4, groups=4, padding=same_padding(50, 41, 4),
                  form="im2col") + conv.bias[...]
    np.testing.assert_allclose(ours, conv(x), rtol=1e-4, atol=1e-5)


def test_block_diagonal_keeps_each_group_and_zeros_the_rest():
    w = jnp.arange(1, 2 * 2 * 8 + 1, dtype=jnp.float32).reshape(2, 2, 8)   # 4 groups, 2 out each
    dense = np.asarray(block_diagonal(w, groups=4, m=2))                      # 2 groups of 2
    assert dense.shape == (2, 4, 8)
    # Supergroup 0 holds old groups 0 (outputs 0-1) and 1 (outputs 2-3); group 0's inputs are
    # rows 0-1 of the merged group, group 1's rows 2-3.
    np.testing.assert_array_equal(dense[:, 0:2, 0:2], np.asarray(w)[:, :, 0:2])
    np.testing.assert_array_equal(dense[:, 2:4, 2:4], np.asarray(w)[:, :, 2:4])
    assert not dense[:, 0:2, 2:4].any() and not dense[:, 2:4, 0:2].any()
    with pytest.raises(ValueError, match="do not split"):
        block_diagonal(w, groups=4, m=3)


def test_bad_shapes_and_forms_are_refused():
    x, w = jnp.zeros((1, 10, 4)), jnp.zeros((3, 4, 4))
    with pytest.raises(ValueError, match="form 'nope'"):
        conv1d(x, w, form="nope")
    with pytest.raises(ValueError, match="stride 1 only"):
        conv1d(x, w, stride=2, form="project_shift")
    with pytest.raises(ValueError, match="channels"):
        conv1d(x, jnp.zeros((3, 3, 4)))


def test_auto_policy_models_compute_what_xla_models_compute():
    """A tiny SoundStream and its discriminators under the "auto" policies (1-channel stems and
    heads, 4-channel groups moved off cuDNN's generic kernel) have the same parameters as with
    "xla" and give the same reconstruction, logits, features and parameter gradients."""
    import dataclasses

    from audiolm_jax.codec.discriminators import CodecDiscriminatorConfig, CodecDiscriminators
    from audiolm_jax.codec.soundstream import SoundStream, SoundStreamConfig

    codec = SoundStreamConfig(channels=4, embedding_dim=16, num_quantizers=2, codebook_size=8)
    critic = CodecDiscriminatorConfig(wave_channels=4, wave_max_channels=16, stft_window=64,
                                      stft_hop=16, stft_channels=2,
                                      stft_channel_multipliers=(1, 1, 1, 1, 1, 1))
    wav = jnp.asarray(np.random.default_rng(0).standard_normal((2, 640)) * 0.1, jnp.float32)

    def run(policy):
        g = SoundStream(dataclasses.replace(codec, conv_policy=policy), rngs=nnx.Rngs(0))
        d = CodecDiscriminators(dataclasses.replace(critic, conv_policy=policy),
                                rngs=nnx.Rngs(1))

        def loss(g, d):
            out = d(g(wav).reconstructed)
            return sum(jnp.sum(o.logits ** 2) + sum(jnp.sum(f ** 2) for f in o.features)
                       for o in out)
        grads = nnx.grad(loss, argnums=(0, 1))(g, d)
        return g(wav).reconstructed, d(wav), grads

    rec_xla, out_xla, grads_xla = run("xla")
    for policy in ("auto", "auto_supergroup"):
        rec, out, grads = run(policy)
        np.testing.assert_allclose(rec, rec_xla, rtol=1e-4, atol=1e-5)
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(out_xla), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        for a, b in zip(jax.tree.leaves(nnx.state(grads)), jax.tree.leaves(nnx.state(grads_xla)),
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="conv policy 'fast'"):
        SoundStream(dataclasses.replace(codec, conv_policy="fast"), rngs=nnx.Rngs(0))


def test_auto_policy_moves_only_the_layers_without_tensor_core_shapes():
    from audiolm_jax.codec.conv_forms import chosen_form
    assert chosen_form("auto", 1, 32, 1) == "im2col"            # generator / wave stems
    assert chosen_form("auto", 4, 16, 4) == "im2col"            # MelGAN's 4-channel groups
    assert chosen_form("auto", 32, 1, 1) == "project_shift"     # generator head
    assert chosen_form("auto", 32, 32, 1) == "xla"              # residual units
    assert chosen_form("auto", 32, 1, 2) == "xla"               # strided: no project_shift
    assert all(chosen_form("xla", *shape) == "xla" for shape in [(1, 32, 1), (4, 16, 4)])
    assert chosen_form("auto_supergroup", 4, 16, 4, groups=4) == "supergroup"
    assert chosen_form("auto_supergroup", 4, 16, 4, groups=1) == "im2col"   # nothing to merge
    assert chosen_form("auto_supergroup", 1, 32, 1) == "im2col"
