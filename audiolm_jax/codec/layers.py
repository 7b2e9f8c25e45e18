"""Causal 1-D convolutions and the codec's parameter-sharding convention.

Layout is channels-last throughout: activations are `[batch, time, channels]`.

Sharding convention: every conv kernel `[kernel, in, out]` (or `[kt, kf, in, out]`) carries the
logical names `(None, ..., None, 'mlp')` -- the output-channel dim may be split over the tensor
axis, all else is replicated -- and biases carry `('mlp',)`. Layers with a single output channel
(waveform out, logits) stay replicated. The codec is small (~8M generator parameters at paper
size), so data parallelism does the heavy lifting and the names only matter for the wide
discriminator layers. Annotations are not applied eagerly (`eager_sharding=False`): models can be
built without a mesh, and the trainer turns `nnx.get_partition_spec` into jit out_shardings
through its logical-axis rules.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from audiolm_jax.codec.conv_forms import apply_conv, check_policy


def partitioned(initializer, names: tuple[str | None, ...]):
    """`initializer` annotated with logical axis names (lazily applied, see module doc)."""
    return nnx.with_partitioning(initializer, names, eager_sharding=False)


def conv_inits(kernel_rank: int, out_features: int) -> dict:
    """Kernel/bias initialisers with the codec's sharding names for an N-D conv."""
    out_name = "mlp" if out_features > 1 else None
    return dict(
        kernel_init=partitioned(nnx.initializers.lecun_normal(),
                                (None,) * (kernel_rank - 1) + (out_name,)),
        bias_init=partitioned(nnx.initializers.zeros_init(), (out_name,)),
    )


class CausalConv1d(nnx.Module):
    """Conv1d whose output frame `t` sees only input samples `< (t + 1) * stride`.

    Causality comes from left padding by `(kernel - 1) * dilation + 1 - stride`, which also makes
    `out_len = in_len // stride` for `in_len` a multiple of `stride`. `conv_policy` picks the
    form the convolution is computed in (`codec.conv_forms`; the parameters are the same).
    `[batch, time, in_channels] -> [batch, time // stride, out_channels]`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 dilation: int = 1, dtype=None, conv_policy: str = "xla", rngs: nnx.Rngs):
        self.left_pad = (kernel_size - 1) * dilation + 1 - stride
        if self.left_pad < 0:
            raise ValueError(f"kernel_size*dilation ({kernel_size}*{dilation}) must be >= stride "
                             f"({stride}) for a causal conv; use kernel_size >= stride")
        self.conv_policy = check_policy(conv_policy)
        self.conv = nnx.Conv(in_channels, out_channels, kernel_size, strides=stride,
                             kernel_dilation=dilation, padding="VALID", dtype=dtype,
                             rngs=rngs, **conv_inits(3, out_channels))

    def __call__(self, x: jax.Array) -> jax.Array:
        return apply_conv(self.conv, jnp.pad(x, ((0, 0), (self.left_pad, 0), (0, 0))),
                          self.conv_policy)


class CausalConvTranspose1d(nnx.Module):
    """Upsampling by `stride` (kernel `2 * stride`); output sample n sees frames <= n // stride.

    A VALID transposed conv yields `(T + 1) * stride` samples; the last `stride` depend on no
    future frame that exists yet, so they are dropped (trimming on the right keeps causality).
    `[batch, frames, in_channels] -> [batch, frames * stride, out_channels]`.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, dtype=None,
                 rngs: nnx.Rngs):
        self.stride = stride
        self.conv = nnx.ConvTranspose(in_channels, out_channels, 2 * stride, strides=stride,
                                      padding="VALID", dtype=dtype, rngs=rngs,
                                      **conv_inits(3, out_channels))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)[:, : x.shape[1] * self.stride]
