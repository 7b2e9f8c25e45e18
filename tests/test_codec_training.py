"""Gin configs, discriminator shapes, sharding names and a few real optimisation steps."""
import functools
import os

import gin
import jax
import numpy as np
import optax
import pytest
from flax import nnx

from audiolm_jax import config

from audiolm_jax.codec import (
    CodecDiscriminatorConfig,
    CodecDiscriminators,
    CodecLossConfig,
    SoundStream,
    SoundStreamConfig,
    bitrate_kbps,
    discriminator_losses,
    generator_losses,
)



def key(seed):
    return jax.random.key(seed, impl="rbg")


def parse(name):
    """Bound configs of gin/models/{name}.gin, parsed as the CLI does (includes resolve in gin/)."""
    gin.clear_config()
    config.parse_gin([f"models/{name}"], [], finalize=False)
    try:
        return SoundStreamConfig(), CodecDiscriminatorConfig(), CodecLossConfig()
    finally:
        gin.clear_config()


FAST_COMPILE = {"xla_backend_optimization_level": 0}   # ~2x faster XLA compiles on CPU


def fast_init(make):
    """Build a module in one jitted program (instead of one eager compile per parameter shape)."""
    graphdef = nnx.graphdef(nnx.eval_shape(make))
    return nnx.merge(graphdef, jax.jit(lambda: nnx.state(make()), compiler_options=FAST_COMPILE)())


@pytest.fixture(scope="module")
def tiny():
    config, disc_config, loss_config = parse("codec_tiny")
    model = SoundStream(config, rngs=nnx.Rngs(key(0)))
    discriminators = fast_init(lambda: CodecDiscriminators(disc_config, rngs=nnx.Rngs(key(1))))
    return model, discriminators, loss_config


def test_paper_configs_build_the_paper_models():
    speech, speech_disc, speech_loss = parse("codec_paper_speech")
    assert (speech.num_quantizers, speech.codebook_size, speech.strides) == (12, 1024, (2, 4, 5, 8))
    assert speech.frame_rate == 50.0
    assert bitrate_kbps(speech.num_quantizers, speech.codebook_size, speech.frame_rate) == 6.0
    assert bitrate_kbps(4, speech.codebook_size, speech.frame_rate) == 2.0
    assert speech_loss.spectral_windows == tuple(2 ** i for i in range(6, 12))
    assert speech_loss.feature_matching_weight == 100.0
    abstract = nnx.eval_shape(lambda: SoundStream(speech, rngs=nnx.Rngs(0)))
    assert abstract.quantizer.codebooks.shape == (12, 1024, 512)
    params = sum(p.size for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert 5e6 < params < 3e7, params   # 11.8M at C=32, D=512 (5.4M encoder, 6.4M decoder)
    assert speech_disc.wave_scales == 3 and speech_disc.stft_window == 1024

    piano, _, _ = parse("codec_piano")
    assert (piano.num_quantizers, piano.codebook_size, piano.channels) == (3, 2 ** 14, 32)
    abstract = nnx.eval_shape(lambda: SoundStream(piano, rngs=nnx.Rngs(0)))
    assert abstract.quantizer.codebooks.shape == (3, 2 ** 14, 512)


def test_params_carry_logical_axis_names(tiny):
    model, discriminators, _ = tiny
    specs = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    assert tuple(specs["encoder"]["stem"]["conv"]["kernel"].get_value()) == (None, None, "mlp")
    assert tuple(specs["decoder"]["head"]["conv"]["kernel"].get_value()) == (None, None, None)
    stft_specs = nnx.get_partition_spec(nnx.state(discriminators.stft, nnx.Param))
    assert tuple(stft_specs["stem"]["kernel"].get_value()) == (None, None, None, "mlp")
    # On an 8-device mesh with 'mlp' -> 'tensor', every annotated dim of the tiny model divides.
    mesh = jax.make_mesh((4, 2), ("data", "tensor"))
    with nnx.logical_axis_rules([("mlp", "tensor")]):
        shardings = nnx.get_named_sharding(nnx.state(model, nnx.Param), mesh)
    placed = jax.device_put(nnx.state(model, nnx.Param), shardings)
    kernel = placed["encoder"]["stem"]["conv"]["kernel"][...]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, None, "tensor")


def test_discriminator_output_shapes(tiny):
    _, discriminators, _ = tiny
    wav = jax.ShapeDtypeStruct((2, 3200), np.float32)
    outputs = nnx.eval_shape(lambda d, w: d(w), discriminators, wav)   # shapes only, no compile
    assert len(outputs) == 4                                        # 3 wave scales + STFT
    assert [o.logits.shape for o in outputs[:3]] == [(2, 13), (2, 7), (2, 4)]
    assert outputs[3].logits.shape == (2, 7)      # 51 STFT frames / 2^3 (ceil), 1 logit each
    assert outputs[0].features[0].shape == (2, 3200, 4)
    assert outputs[3].features[-1].shape[2] == 2  # 128 bins / 2^6 frequency strides


def test_gan_steps_reduce_reconstruction_loss(tiny):
    """Alternating generator/discriminator Adam steps with the full SoundStream objective."""
    model, discriminators, loss_config = tiny
    gen_opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    disc_opt = nnx.Optimizer(discriminators, optax.adam(1e-4), wrt=nnx.Param)
    graphdef, state = nnx.split((model, gen_opt, discriminators, disc_opt))

    # One jitted program for both updates.
    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def train_step(state, wav, rng):
        model, gen_opt, discriminators, disc_opt = nnx.merge(graphdef, state)

        def generator_objective(model):
            total, metrics, reconstructed = generator_losses(
                model, discriminators, wav, rng, train=True, adversarial_weight=1.0,
                config=loss_config)
            return total, (metrics, reconstructed)

        grad_fn = nnx.value_and_grad(generator_objective, argnums=nnx.DiffState(0, nnx.Param),
                                     has_aux=True)
        (_, (metrics, reconstructed)), grads = grad_fn(model)
        gen_opt.update(model, grads)
        (_, disc_metrics), disc_grads = nnx.value_and_grad(discriminator_losses, has_aux=True)(
            discriminators, wav, reconstructed)
        disc_opt.update(discriminators, disc_grads)
        return nnx.state((model, gen_opt, discriminators, disc_opt)), {**metrics, **disc_metrics}

    t = np.arange(3200) / 16000
    wav = np.stack([0.5 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 440 * t)])
    wav = wav.astype(np.float32)
    disc_before = np.asarray(discriminators.stft.stem.kernel[...]).copy()
    history = []
    for _ in range(8):   # a fixed rng: the same quantizer-dropout draw every step
        state, metrics = train_step(state, wav, key(2))
        history.append(float(metrics["loss/reconstruction"]))
        assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    assert {"loss/adversarial", "loss/feature_matching", "loss/discriminator"} <= set(metrics)
    assert history[-1] < 0.7 * history[0], history
    nnx.update((model, gen_opt, discriminators, disc_opt), state)
    assert bool(model.quantizer.initialized[...])        # the RVQ state left the jitted step
    assert not np.allclose(np.asarray(discriminators.stft.stem.kernel[...]), disc_before)
