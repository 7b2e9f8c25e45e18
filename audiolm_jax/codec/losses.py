"""SoundStream objectives (Sec. III-E): hinge GAN, feature matching, multi-scale spectral loss.

The trainer's GAN objective calls two pure, jit-able functions:
- `generator_losses(model, discriminators, wav, rng, train, adversarial_weight)` -> (total, metrics,
  reconstructed); differentiate it w.r.t. the codec's `nnx.Param`s (the RVQ state it writes is
  not a Param);
- `discriminator_losses(discriminators, wav, reconstructed)` -> (loss, metrics); differentiate it
  w.r.t. the discriminators' params.

Generator total = w_rec * L_rec + commitment
                + adversarial_weight * (w_adv * L_adv + w_feat * L_feat)
with the paper's w_rec=1, w_adv=1, w_feat=100 (`CodecLossConfig`, gin). `adversarial_weight` is a
runtime factor for schedules (e.g. 0 during a reconstruction-only warm-up; a Python 0 skips the
discriminator forward entirely).

Normalisation choices (the paper writes sums over time): per-frame norms are averaged over frames
and batch so loss weights do not depend on crop length; feature matching is the mean absolute
difference over all elements of each layer, averaged over layers and discriminators.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import gin
import jax
import jax.numpy as jnp

from audiolm_jax.codec.discriminators import CodecDiscriminators, DiscriminatorOutput
from audiolm_jax.codec.soundstream import SoundStream
from audiolm_jax.codec.spectral import mel_spectrogram


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CodecLossConfig:
    reconstruction_weight: float = 1.0
    adversarial_weight: float = 1.0
    feature_matching_weight: float = 100.0
    spectral_windows: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)  # 2^6 .. 2^11
    n_mels: int = 64
    log_floor: float = 1e-5


def hinge_discriminator_loss(real_logits: Sequence[jax.Array],
                             fake_logits: Sequence[jax.Array]) -> jax.Array:
    """mean_k [mean_t relu(1 - D_k(x)) + mean_t relu(1 + D_k(G(x)))] over discriminators k."""
    terms = [jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + f))
             for r, f in zip(real_logits, fake_logits, strict=True)]
    return sum(terms) / len(terms)


def hinge_generator_loss(fake_logits: Sequence[jax.Array]) -> jax.Array:
    """mean_k mean_t relu(1 - D_k(G(x))): the SoundStream generator's adversarial term."""
    return sum(jnp.mean(jax.nn.relu(1.0 - f)) for f in fake_logits) / len(fake_logits)


def feature_matching_loss(real: Sequence[DiscriminatorOutput],
                          fake: Sequence[DiscriminatorOutput]) -> jax.Array:
    """Mean L1 between discriminator activations on real (held fixed) and reconstructed audio."""
    terms = [jnp.mean(jnp.abs(jax.lax.stop_gradient(r) - f))
             for real_out, fake_out in zip(real, fake, strict=True)
             for r, f in zip(real_out.features, fake_out.features, strict=True)]
    return sum(terms) / len(terms)


def _l2_over_last(x: jax.Array) -> jax.Array:
    """||x||_2 over the last axis with a zero (not NaN) gradient at x = 0."""
    squared = jnp.sum(x * x, axis=-1)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


def multi_scale_spectral_loss(target: jax.Array, estimate: jax.Array, *, sample_rate: int,
                              windows: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
                              n_mels: int = 64, log_floor: float = 1e-5) -> jax.Array:
    """sum_s mean_t ||S_s(x) - S_s(y)||_1 + sqrt(s / 2) * mean_t ||log S_s(x) - log S_s(y)||_2.

    S_s is a 64-bin mel spectrogram with window s and hop s/4 (SoundStream eq. 3).
    `target, estimate: [batch, samples]` -> scalar; zero iff the mel spectrograms agree.
    """
    total = jnp.zeros((), jnp.float32)
    for window in windows:
        spec_x = mel_spectrogram(target, window, window // 4, n_mels, sample_rate)
        spec_y = mel_spectrogram(estimate, window, window // 4, n_mels, sample_rate)
        linear = jnp.mean(jnp.sum(jnp.abs(spec_x - spec_y), axis=-1))
        log_diff = (jnp.log(jnp.maximum(spec_x, log_floor))
                    - jnp.log(jnp.maximum(spec_y, log_floor)))
        total = total + linear + math.sqrt(window / 2) * jnp.mean(_l2_over_last(log_diff))
    return total


def generator_losses(model: SoundStream, discriminators: CodecDiscriminators, wav: jax.Array,
                     rng: jax.Array, train: bool = True, adversarial_weight=1.0,
                     config: CodecLossConfig | None = None):
    """Codec (generator) objective on `wav [batch, samples]` (samples a multiple of the hop).

    Returns `(total_loss, metrics, reconstructed [batch, samples])`. With train=True the RVQ
    state of `model` is updated (k-means init, EMA, restarts, quantizer dropout from `rng`).
    """
    config = config or CodecLossConfig()
    out = model(wav, train=train, rng=rng)
    reconstructed = out.reconstructed
    reconstruction = multi_scale_spectral_loss(
        wav, reconstructed, sample_rate=model.sample_rate, windows=config.spectral_windows,
        n_mels=config.n_mels, log_floor=config.log_floor)
    total = config.reconstruction_weight * reconstruction + out.commitment_loss
    metrics = {"loss/reconstruction": reconstruction, "loss/commitment": out.commitment_loss,
               **out.metrics}
    skip_adversarial = isinstance(adversarial_weight, (int, float)) and adversarial_weight == 0
    if not skip_adversarial:
        real = discriminators(wav)
        fake = discriminators(reconstructed)
        adversarial = hinge_generator_loss([f.logits for f in fake])
        feature = feature_matching_loss(real, fake)
        total = total + adversarial_weight * (config.adversarial_weight * adversarial
                                              + config.feature_matching_weight * feature)
        metrics["loss/adversarial"] = adversarial
        metrics["loss/feature_matching"] = feature
    metrics["loss/generator"] = total
    return total, metrics, reconstructed


def discriminator_losses(discriminators: CodecDiscriminators, wav: jax.Array,
                         reconstructed: jax.Array):
    """Hinge loss of all discriminators on real `wav` vs `reconstructed` (held fixed).

    Both `[batch, samples]`. Returns `(loss, metrics)`.
    """
    real = discriminators(wav)
    fake = discriminators(jax.lax.stop_gradient(reconstructed))
    real_logits = [r.logits for r in real]
    fake_logits = [f.logits for f in fake]
    loss = hinge_discriminator_loss(real_logits, fake_logits)
    metrics = {
        "loss/discriminator": loss,
        "discriminator/real_logits": jnp.mean(jnp.stack([jnp.mean(r) for r in real_logits])),
        "discriminator/fake_logits": jnp.mean(jnp.stack([jnp.mean(f) for f in fake_logits])),
    }
    return loss, metrics
