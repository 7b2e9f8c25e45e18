"""SoundStream: causal SEANet encoder -> residual VQ -> causal SEANet decoder.

Paper numbers (AudioLM Sec. IV-A, SoundStream Sec. III) live in gin/models/codec_paper_speech.gin:
strides (2, 4, 5, 8) (320-fold: 50 Hz at 16 kHz), Q=12 levels of N=1024 codes (6 kbps),
C=32 base channels, D=512-dim embeddings. The AudioLM paper does not state C or D; C=32 is
SoundStream's default model and D=512 is the embedding size used by public reimplementations.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import gin
import jax
import jax.numpy as jnp
from flax import nnx

from audiolm_jax.codec.rvq import ResidualVectorQuantizer
from audiolm_jax.codec.seanet import SEANetDecoder, SEANetEncoder


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SoundStreamConfig:
    sample_rate: int = 16000
    channels: int = 32
    embedding_dim: int = 512
    strides: tuple[int, ...] = (2, 4, 5, 8)
    dilations: tuple[int, ...] = (1, 3, 9)
    kernel_size: int = 7
    num_quantizers: int = 12
    codebook_size: int = 1024
    commitment_weight: float = 0.25
    ema_decay: float = 0.99
    kmeans_iterations: int = 10
    dead_code_threshold: float = 2.0
    quantizer_dropout: bool = True
    compute_dtype: str = "float32"   # conv compute; "bfloat16" on accelerators. Params stay f32.
    # How the convolutions are computed (codec.conv_forms.POLICIES); the parameters are the same.
    conv_policy: str = "xla"

    @property
    def hop_length(self) -> int:
        """Samples per frame (320 at paper settings)."""
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        """Frames per second (50 at paper settings)."""
        return self.sample_rate / self.hop_length


class SoundStreamOutput(NamedTuple):
    reconstructed: jax.Array    # [batch, samples] float32
    codes: jax.Array            # int32 [batch, frames, levels]
    commitment_loss: jax.Array  # scalar
    num_quantizers: jax.Array   # int32 [batch] levels used per example
    metrics: dict


class SoundStream(nnx.Module):
    """The acoustic tokenizer; `SoundStream(config=None)` uses the gin-bound `SoundStreamConfig`."""

    def __init__(self, config: SoundStreamConfig | None = None, *, rngs: nnx.Rngs):
        self.config = config = config or SoundStreamConfig()
        dtype = jnp.dtype(config.compute_dtype)
        self.encoder = SEANetEncoder(config.channels, config.embedding_dim, config.strides,
                                     config.dilations, config.kernel_size, dtype=dtype,
                                     conv_policy=config.conv_policy, rngs=rngs)
        self.quantizer = ResidualVectorQuantizer(
            config.embedding_dim, config.num_quantizers, config.codebook_size,
            decay=config.ema_decay, commitment_weight=config.commitment_weight,
            kmeans_iterations=config.kmeans_iterations,
            dead_code_threshold=config.dead_code_threshold,
            quantizer_dropout=config.quantizer_dropout, rngs=rngs)
        self.decoder = SEANetDecoder(config.channels, config.embedding_dim, config.strides,
                                     config.dilations, config.kernel_size, dtype=dtype,
                                     conv_policy=config.conv_policy, rngs=rngs)

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def num_quantizers(self) -> int:
        return self.config.num_quantizers

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def _check_wav(self, wav: jax.Array) -> None:
        if wav.ndim != 2 or wav.shape[1] == 0 or wav.shape[1] % self.hop_length:
            raise ValueError(
                f"SoundStream expects wav [batch, samples] with samples a positive multiple of "
                f"{self.hop_length}; got shape {tuple(wav.shape)}. Pad first "
                "(audiolm_jax.codec.api.pad_to_frames) or use api.encode.")

    def embed(self, wav: jax.Array) -> jax.Array:
        """Continuous encoder output: `[batch, samples] -> float32 [batch, frames, dim]`."""
        self._check_wav(wav)
        return self.encoder(wav).astype(jnp.float32)

    def encode(self, wav: jax.Array, num_quantizers: int | None = None) -> jax.Array:
        """`[batch, samples]` -> int32 `[batch, samples // hop, num_quantizers or Q]`; no update."""
        return self.quantizer(self.embed(wav), num_quantizers=num_quantizers).codes

    def decode(self, codes: jax.Array) -> jax.Array:
        """int `[batch, frames, levels <= Q]` -> float32 `[batch, frames * hop]`."""
        if codes.ndim != 3:
            raise ValueError("decode expects codes [batch, frames, levels], got shape "
                             f"{codes.shape}")
        return self.decoder(self.quantizer.lookup(codes)).astype(jnp.float32)

    def __call__(self, wav: jax.Array, *, train: bool = False, rng: jax.Array | None = None,
                 num_quantizers: int | None = None) -> SoundStreamOutput:
        """Full autoencoder pass. train=True updates the RVQ state and needs `rng`.

        `wav [batch, samples]`, samples a multiple of the hop (320).
        """
        out = self.quantizer(self.embed(wav), train=train, rng=rng, num_quantizers=num_quantizers)
        reconstructed = self.decoder(out.quantized).astype(jnp.float32)
        return SoundStreamOutput(reconstructed, out.codes, out.commitment_loss,
                                 out.num_quantizers, out.metrics)
