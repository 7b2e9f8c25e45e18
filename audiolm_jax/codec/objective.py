"""SoundStream training through the trainer core: a GAN `Objective` over one container module.

`CodecGAN` holds the codec (`generator`, a SoundStream) and its `discriminators`; the trainer
updates two optimizer groups per step, in this order (SoundStream Sec. III-E, HiFi-GAN recipe):
1. "discriminator" (from `discriminator_start_step`; skipped, with no forward pass, before it):
   hinge loss of every discriminator on real audio vs the codec's output, the output computed
   without gradient into the codec. `keep_state_updates=False`: the codec forward of this group
   would advance the RVQ statistics (EMA, restarts) a second time per step, so they are dropped.
2. "generator": w_rec * multi-scale spectral loss + commitment
   + [step >= start] * (w_adv * hinge adversarial + w_feat * feature matching),
   seeing the discriminators already updated on this batch. Before the start the adversarial
   branch is not computed at all (`lax.cond`), so a reconstruction-only warm-up costs one codec
   pass. The RVQ codebooks move only here (k-means init on the first batch, EMA, restarts).

Batches are the crop pipeline's {"audio" [batch, samples], "audio_length" [batch]}. Crops are
cut to a whole number of frames (a multiple of the 320-sample hop), and the codec's output is
zeroed past each clip's valid length, so zero padding of short clips costs nothing and teaches
nothing.

Mixed precision: the trainer casts params to its compute dtype; `SoundStreamConfig.compute_dtype`
sets the codec's conv dtype, and the discriminators see their input in that dtype too (bf16 on
accelerators). Losses and metrics are f32.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import gin
import jax
import jax.numpy as jnp
from flax import nnx

from audiolm_jax.codec.discriminators import CodecDiscriminatorConfig, CodecDiscriminators
from audiolm_jax.codec.losses import (
    CodecLossConfig,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    multi_scale_spectral_loss,
)
from audiolm_jax.codec.soundstream import SoundStream, SoundStreamConfig
from audiolm_jax.codec.spectral import mel_spectrogram
from audiolm_jax.training.objective import Objective, OptimizerGroup, StepCost

GENERATOR, DISCRIMINATOR = "generator", "discriminator"


class CodecGAN(nnx.Module):
    """What the codec trainer checkpoints: `generator` (SoundStream) and `discriminators`."""

    def __init__(self, config: SoundStreamConfig, discriminator_config: CodecDiscriminatorConfig,
                 *, rngs: nnx.Rngs):
        self.generator = SoundStream(config, rngs=rngs)
        self.discriminators = CodecDiscriminators(discriminator_config, rngs=rngs)


def frame_aligned_audio(batch: Mapping[str, jax.Array], hop: int) -> tuple[jax.Array, jax.Array]:
    """(wav f32 `[batch, samples']`, mask f32 `[batch, samples']`), samples' = samples cut down
    to a multiple of `hop`; mask is 1 on each clip's first `audio_length` samples (all of them
    when the batch has no "audio_length")."""
    wav = batch["audio"]
    if wav.ndim != 2:
        raise ValueError(f"batch['audio'] must be [batch, samples], got shape {wav.shape}")
    samples = wav.shape[1] - wav.shape[1] % hop
    if samples == 0:
        raise ValueError(f"crops of {wav.shape[1]} samples are shorter than one codec frame "
                         f"({hop} samples); raise audio_crop_batches.crop_seconds")
    wav = wav[:, :samples].astype(jnp.float32)
    if "audio_length" not in batch:
        return wav, jnp.ones_like(wav)
    mask = (jnp.arange(samples)[None, :] < batch["audio_length"][:, None]).astype(jnp.float32)
    return wav * mask, mask


def log_mel_distance(target: jax.Array, estimate: jax.Array, *, sample_rate: int,
                     window: int = 1024, n_mels: int = 64, floor: float = 1e-5) -> jax.Array:
    """Mean |ln mel(target) - ln mel(estimate)| over batch, frames and bins (hop window / 4);
    `[batch, samples]` twice -> scalar, 0 iff the floored mel spectrograms agree."""
    def log_mel(wav):
        spec = mel_spectrogram(wav, window, window // 4, n_mels, sample_rate)
        return jnp.log(jnp.maximum(spec, floor))
    return jnp.mean(jnp.abs(log_mel(target) - log_mel(estimate)))


@gin.configurable
class CodecObjective(Objective):
    """SoundStream GAN training. Configs default to the gin-bound `SoundStreamConfig()`,
    `CodecDiscriminatorConfig()` and `CodecLossConfig()` (see gin/models/codec_*.gin).

    discriminator_start_step: first step that trains the discriminators and adds the adversarial
      and feature-matching terms to the codec's loss (0: from the start).
    eval_num_quantizers: bitrates evaluated besides the full Q (4: the 2 kbps of the coarse
      stage); levels above Q are left out. Eval metrics are `q{n}/spectral_loss` and
      `q{n}/mel_distance` for each n.
    Optimizers: gin scopes `generator/OptimizerConfig.*` and `discriminator/OptimizerConfig.*`.
    """

    def __init__(self, model_config: SoundStreamConfig | None = None,
                 discriminator_config: CodecDiscriminatorConfig | None = None,
                 loss_config: CodecLossConfig | None = None,
                 discriminator_start_step: int = 0,
                 eval_num_quantizers: Sequence[int] = (4,)):
        self.model_config = model_config or SoundStreamConfig()
        self.discriminator_config = discriminator_config or CodecDiscriminatorConfig()
        self.loss_config = loss_config or CodecLossConfig()
        if discriminator_start_step < 0:
            raise ValueError(f"discriminator_start_step={discriminator_start_step}; use a step >= 0")
        self.discriminator_start_step = int(discriminator_start_step)
        full = self.model_config.num_quantizers
        levels = [int(n) for n in eval_num_quantizers]
        if any(n < 1 for n in levels):
            raise ValueError(f"eval_num_quantizers={tuple(levels)}: levels must be >= 1")
        # The evaluated levels, full Q first (e.g. (12, 4)); levels above Q do not exist.
        self.eval_levels = tuple(sorted({full, *(n for n in levels if n <= full)}, reverse=True))

    # --- model and groups ---------------------------------------------------------------------

    def create_model(self, rngs: nnx.Rngs) -> CodecGAN:
        return CodecGAN(self.model_config, self.discriminator_config, rngs=rngs)

    def optimizer_groups(self) -> Sequence[OptimizerGroup]:
        return [
            OptimizerGroup(DISCRIMINATOR, self.discriminator_loss,
                           params=nnx.PathContains("discriminators"),
                           start_step=self.discriminator_start_step, keep_state_updates=False),
            OptimizerGroup(GENERATOR, self.generator_loss, params=nnx.PathContains("generator")),
        ]

    def step_cost(self, batch: Mapping[str, jax.ShapeDtypeStruct]) -> StepCost:
        rows, samples = batch["audio"].shape
        samples -= samples % self.model_config.hop_length
        return StepCost(audio_seconds=rows * samples / self.model_config.sample_rate)

    # --- losses -------------------------------------------------------------------------------

    def _discriminate(self, model: CodecGAN, wav: jax.Array):
        # The discriminators compute in the codec's conv dtype (bf16 on accelerators).
        return model.discriminators(wav.astype(jnp.dtype(self.model_config.compute_dtype)))

    def discriminator_loss(self, model: CodecGAN, batch, rng, step):
        """Hinge loss on real audio vs the codec's (quantizer-dropout) reconstruction."""
        del step
        wav, mask = frame_aligned_audio(batch, model.generator.hop_length)
        fake = jax.lax.stop_gradient(model.generator(wav, train=True, rng=rng).reconstructed * mask)
        real_logits = [out.logits for out in self._discriminate(model, wav)]
        fake_logits = [out.logits for out in self._discriminate(model, fake)]
        loss = hinge_discriminator_loss(real_logits, fake_logits)
        mean_logit = lambda logits: jnp.mean(jnp.stack(  # noqa: E731
            [jnp.mean(x.astype(jnp.float32)) for x in logits]))
        return loss, {"real_logits": mean_logit(real_logits), "fake_logits": mean_logit(fake_logits)}

    def reconstruction_terms(self, model: CodecGAN, batch, rng):
        """The generator's forward (train=True: updates the RVQ state) and its multi-scale
        spectral loss: (frame-aligned input, masked reconstruction, spectral loss, generator
        output, which carries the commitment loss). Before the discriminators start, the
        generator loss is reconstruction_weight x spectral loss + commitment loss."""
        cfg = self.loss_config
        wav, mask = frame_aligned_audio(batch, model.generator.hop_length)
        out = model.generator(wav, train=True, rng=rng)
        reconstructed = out.reconstructed * mask
        reconstruction = multi_scale_spectral_loss(
            wav, reconstructed, sample_rate=model.generator.sample_rate,
            windows=cfg.spectral_windows, n_mels=cfg.n_mels, log_floor=cfg.log_floor)
        return wav, reconstructed, reconstruction, out

    def generator_loss(self, model: CodecGAN, batch, rng, step):
        """Spectral reconstruction + commitment (+ adversarial and feature matching once the
        discriminators have started). Updates the RVQ state (train=True)."""
        cfg = self.loss_config
        wav, reconstructed, reconstruction, out = self.reconstruction_terms(model, batch, rng)

        def adversarial_terms():
            real = self._discriminate(model, wav)
            fake = self._discriminate(model, reconstructed)
            adversarial = hinge_generator_loss([f.logits for f in fake])
            return (adversarial.astype(jnp.float32),
                    feature_matching_loss(real, fake).astype(jnp.float32))

        def skipped():
            return jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32)

        if self.discriminator_start_step == 0:
            adversarial, feature = adversarial_terms()
        else:
            adversarial, feature = jax.lax.cond(step >= self.discriminator_start_step,
                                                adversarial_terms, skipped)
        total = (cfg.reconstruction_weight * reconstruction + out.commitment_loss
                 + cfg.adversarial_weight * adversarial + cfg.feature_matching_weight * feature)
        metrics = {"reconstruction": reconstruction, "commitment": out.commitment_loss,
                   "adversarial": adversarial, "feature_matching": feature, **out.metrics}
        return total, metrics

    # --- evaluation ---------------------------------------------------------------------------

    def eval_step(self, model: CodecGAN, batch) -> dict[str, jax.Array]:
        """Spectral loss and log-mel distance of the reconstruction at each of `eval_levels`
        (no quantizer dropout, no RVQ update), over the valid samples of each clip."""
        codec = model.generator
        wav, mask = frame_aligned_audio(batch, codec.hop_length)
        cfg = self.loss_config
        metrics = {}
        for levels in self.eval_levels:
            reconstructed = codec(wav, train=False, num_quantizers=levels).reconstructed * mask
            metrics[f"q{levels}/spectral_loss"] = multi_scale_spectral_loss(
                wav, reconstructed, sample_rate=codec.sample_rate, windows=cfg.spectral_windows,
                n_mels=cfg.n_mels, log_floor=cfg.log_floor)
            metrics[f"q{levels}/mel_distance"] = log_mel_distance(
                wav, reconstructed, sample_rate=codec.sample_rate)
        return metrics
