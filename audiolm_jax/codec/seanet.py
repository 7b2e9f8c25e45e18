"""Causal SEANet encoder and decoder (SoundStream, Zeghidour et al. 2021, Fig. 3).

Encoder: Conv(k=7, C) -> 4 blocks [3 residual units (dilations 1, 3, 9) at the block's input
width, then a strided conv (kernel 2S) doubling the channels] -> Conv(k=3, D).
With strides (2, 4, 5, 8) and C=32 the block widths are 64, 128, 256, 512 and one embedding comes
out per 320 samples (50 Hz at 16 kHz). The decoder mirrors it: Conv(k=7, 16C) -> 4 blocks
[transposed conv (kernel 2S) halving the channels, then 3 residual units] -> Conv(k=7, 1).

Choices where the paper is silent, documented here once:
- ELU precedes every conv inside the residual units and blocks (pre-activation, as SEANet).
- Residual unit: x + Conv1x1(ELU(DilatedConv_k7(ELU(x)))), identity skip.
- No normalisation layers and no output tanh (the paper names none; a linear output lets
  the spectral loss set the scale).
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from audiolm_jax.codec.layers import CausalConv1d, CausalConvTranspose1d


class ResidualUnit(nnx.Module):
    """`[batch, time, channels] -> [batch, time, channels]`, causal."""

    def __init__(self, channels: int, dilation: int, kernel_size: int = 7, *, dtype=None,
                 conv_policy: str = "xla", rngs: nnx.Rngs):
        conv = dict(dtype=dtype, conv_policy=conv_policy, rngs=rngs)
        self.dilated = CausalConv1d(channels, channels, kernel_size, dilation=dilation, **conv)
        self.pointwise = CausalConv1d(channels, channels, 1, **conv)

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.pointwise(nnx.elu(self.dilated(nnx.elu(x))))


class EncoderBlock(nnx.Module):
    """Residual units, then downsampling by `stride`: `[b, t, in] -> [b, t // stride, out]`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 dilations: Sequence[int], kernel_size: int, *, dtype=None,
                 conv_policy: str = "xla", rngs: nnx.Rngs):
        conv = dict(dtype=dtype, conv_policy=conv_policy, rngs=rngs)
        self.units = nnx.List([ResidualUnit(in_channels, d, kernel_size, **conv)
                               for d in dilations])
        self.down = CausalConv1d(in_channels, out_channels, 2 * stride, stride=stride, **conv)

    def __call__(self, x: jax.Array) -> jax.Array:
        for unit in self.units:
            x = unit(x)
        return self.down(nnx.elu(x))


class DecoderBlock(nnx.Module):
    """Upsampling by `stride`, then residual units: `[b, t, in] -> [b, t * stride, out]`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 dilations: Sequence[int], kernel_size: int, *, dtype=None,
                 conv_policy: str = "xla", rngs: nnx.Rngs):
        self.up = CausalConvTranspose1d(in_channels, out_channels, stride, dtype=dtype, rngs=rngs)
        self.units = nnx.List([ResidualUnit(out_channels, d, kernel_size, dtype=dtype,
                                            conv_policy=conv_policy, rngs=rngs)
                               for d in dilations])

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.up(nnx.elu(x))
        for unit in self.units:
            x = unit(x)
        return x


class SEANetEncoder(nnx.Module):
    """Waveform to embeddings: `[batch, samples] -> [batch, samples // prod(strides), dim]`."""

    def __init__(self, channels: int, embedding_dim: int, strides: Sequence[int],
                 dilations: Sequence[int] = (1, 3, 9), kernel_size: int = 7, *, dtype=None,
                 conv_policy: str = "xla", rngs: nnx.Rngs):
        conv = dict(dtype=dtype, conv_policy=conv_policy, rngs=rngs)
        self.stem = CausalConv1d(1, channels, kernel_size, **conv)
        widths = [channels * 2 ** i for i in range(len(strides) + 1)]
        self.blocks = nnx.List([
            EncoderBlock(widths[i], widths[i + 1], s, dilations, kernel_size, **conv)
            for i, s in enumerate(strides)])
        self.head = CausalConv1d(widths[-1], embedding_dim, 3, **conv)

    def __call__(self, wav: jax.Array) -> jax.Array:
        x = self.stem(wav[..., None])
        for block in self.blocks:
            x = block(x)
        return self.head(nnx.elu(x))


class SEANetDecoder(nnx.Module):
    """Embeddings to waveform: `[batch, frames, dim] -> [batch, frames * prod(strides)]`."""

    def __init__(self, channels: int, embedding_dim: int, strides: Sequence[int],
                 dilations: Sequence[int] = (1, 3, 9), kernel_size: int = 7, *, dtype=None,
                 conv_policy: str = "xla", rngs: nnx.Rngs):
        widths = [channels * 2 ** i for i in range(len(strides), -1, -1)]
        conv = dict(dtype=dtype, conv_policy=conv_policy, rngs=rngs)
        self.stem = CausalConv1d(embedding_dim, widths[0], kernel_size, **conv)
        self.blocks = nnx.List([
            DecoderBlock(widths[i], widths[i + 1], s, dilations, kernel_size, **conv)
            for i, s in enumerate(reversed(tuple(strides)))])
        self.head = CausalConv1d(widths[-1], 1, kernel_size, **conv)

    def __call__(self, embeddings: jax.Array) -> jax.Array:
        x = self.stem(embeddings)
        for block in self.blocks:
            x = block(x)
        return self.head(nnx.elu(x))[..., 0]
