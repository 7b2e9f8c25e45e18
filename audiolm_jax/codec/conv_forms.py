"""The same 1-D convolution computed in other forms, for the shapes cuDNN runs slowly.

The H100 profile of the codec's training step (`results/h100_session26/codec_step_profile.json`)
spends 87% (reconstruction phase) and 90% (GAN phase) of device time in cuDNN convolutions, and
most of the GAN step in cuDNN's generic `convolve_common_engine` kernel, its path for convolutions
that tensor cores cannot take: channel counts per group that are not multiples of 8, as in
1-channel stems, 1-channel heads and MelGAN's 4-channel groups. Each form below computes
`lax.conv_general_dilated` of channels-last `x [batch, time, in]` with `w [taps, in / groups, out]`
(flax's layout) from other primitives, so the compiler can be given shapes it runs well:

  xla            the convolution itself (the reference)
  im2col         the taps gathered into one operand `[batch, out_time, groups, taps * in_g]`,
                 then one matmul per group; good when `in / groups` is small (stems: 1 channel)
  project_shift  every tap's product first (`x @ w` to `taps * out` channels), then the shifted
                 products summed; good when `out` is small (heads: 1 channel); stride 1 only
  supergroup     groups merged `m` at a time with block-diagonal kernels, so each group has
                 `m` times the channels (m x the FLOPs): MelGAN's 4-channel groups become 8

All forms give the same values up to floating-point summation order, and their gradients are
autodiff's of the same function (tests/test_codec_conv_forms.py). Which one is fastest for which
layer is measured by `benchmarks/codec_conv_forms.py` on the GPU.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

FORMS = ("xla", "im2col", "project_shift", "supergroup")


def same_padding(length: int, taps: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """(left, right) zero padding of "SAME" (out = ceil(length / stride)), as lax pads it."""
    out = -(-length // stride)
    total = max((out - 1) * stride + (taps - 1) * dilation + 1 - length, 0)
    return total // 2, total - total // 2


def _checked(x, w, groups):
    if x.ndim != 3 or w.ndim != 3:
        raise ValueError(f"conv1d expects x [batch, time, in] and w [taps, in/groups, out]; got "
                         f"{x.shape} and {w.shape}")
    if x.shape[-1] != w.shape[1] * groups or w.shape[2] % groups:
        raise ValueError(f"conv1d: x has {x.shape[-1]} channels and w {w.shape} with {groups} "
                         f"groups; need in = w.shape[1] * groups and out divisible by groups")


def _output_length(padded: int, taps: int, stride: int, dilation: int) -> int:
    out = (padded - (taps - 1) * dilation - 1) // stride + 1
    if out < 1:
        raise ValueError(f"conv1d: {padded} padded samples are fewer than the kernel's span "
                         f"{(taps - 1) * dilation + 1}")
    return out


def _tap(x, j, dilation, stride, out):
    """x[:, j*dilation + t*stride] for t < out: `[batch, out, channels]`."""
    start = j * dilation
    return jax.lax.slice_in_dim(x, start, start + (out - 1) * stride + 1, stride, axis=1)


def conv1d(x: jax.Array, w: jax.Array, *, stride: int = 1, dilation: int = 1,
           padding: tuple[int, int] = (0, 0), groups: int = 1, form: str = "xla",
           supergroup: int = 2) -> jax.Array:
    """`x [batch, time, in]`, `w [taps, in / groups, out]` -> `[batch, out_time, out]` in `form`
    (see the module doc); `padding` is (left, right) zeros, `supergroup` the m of that form."""
    _checked(x, w, groups)
    if form == "xla":
        return jax.lax.conv_general_dilated(
            x, w, (stride,), [tuple(padding)], rhs_dilation=(dilation,),
            dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups)
    if form == "supergroup":
        return conv1d(x, block_diagonal(w, groups, supergroup), stride=stride,
                      dilation=dilation, padding=padding, groups=groups // supergroup)
    taps, in_g, out_ch = w.shape
    out_g = out_ch // groups
    x = jnp.pad(x, ((0, 0), tuple(padding), (0, 0)))
    batch, padded, _ = x.shape
    out = _output_length(padded, taps, stride, dilation)
    # Flax/lax group layout: output channel o reads input group o // out_g.
    wg = w.reshape(taps, in_g, groups, out_g).transpose(2, 0, 1, 3)   # [g, taps, in_g, out_g]
    if form == "im2col":
        patches = jnp.stack([_tap(x, j, dilation, stride, out) for j in range(taps)], axis=2)
        patches = patches.reshape(batch, out, taps, groups, in_g)
        y = jnp.einsum("btkgc,gkco->btgo", patches, wg)
        return y.reshape(batch, out, out_ch)
    if form == "project_shift":
        if stride != 1:
            raise ValueError("conv1d form 'project_shift' takes stride 1 only")
        xg = x.reshape(batch, padded, groups, in_g)
        products = jnp.einsum("btgc,gkco->btkgo", xg, wg)       # every tap's product, once
        y = sum(products[:, j * dilation: j * dilation + out, j] for j in range(taps))
        return y.reshape(batch, out, out_ch)
    raise ValueError(f"conv1d form {form!r}: use one of {FORMS}")


def block_diagonal(w: jax.Array, groups: int, m: int) -> jax.Array:
    """A grouped kernel `[taps, in_g, out]` of `groups` groups as one of `groups / m` groups,
    each holding m of the old groups on its block diagonal: `[taps, m * in_g, out]`."""
    taps, in_g, out_ch = w.shape
    if m < 1 or groups % m:
        raise ValueError(f"supergroup of {m}: {groups} groups do not split into groups of {m}")
    out_g = out_ch // groups
    blocks = w.reshape(taps, in_g, groups // m, m, out_g)           # [k, c, G', i, o]
    eye = jnp.asarray(np.eye(m, dtype=np.float32), w.dtype)          # [j (input block), i]
    dense = jnp.einsum("kcGio,ji->kjcGio", blocks, eye)              # zero off the diagonal
    return dense.reshape(taps, m * in_g, out_ch)


POLICIES = ("xla", "auto", "auto_supergroup")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"conv policy {policy!r}: use one of {POLICIES}")
    return policy


def chosen_form(policy: str, in_per_group: int, out_channels: int, stride: int,
                groups: int = 1) -> str:
    """The form a layer runs in under `policy`: "xla" keeps every convolution as it is; "auto"
    moves the layers cuDNN cannot give tensor cores (fewer than 8 input channels per group, or
    fewer than 8 outputs) to im2col or project_shift; "auto_supergroup" is "auto" but keeps
    grouped layers convolutions, two groups merged (so 4-channel groups become 8)."""
    if check_policy(policy) == "xla":
        return "xla"
    if in_per_group < 8:
        if policy == "auto_supergroup" and groups % 2 == 0 and 2 * in_per_group >= 8:
            return "supergroup"
        return "im2col"
    if out_channels < 8 and stride == 1:
        return "project_shift"
    return "xla"


def apply_conv(conv, x: jax.Array, policy: str) -> jax.Array:
    """`conv(x)` of a 1-D `flax.nnx.Conv` (padding "VALID" or "SAME", bias or not), in the form
    `policy` chooses for its shape; the parameters stay the layer's own."""
    kernel = conv.kernel[...]
    taps, in_g, out_ch = kernel.shape
    (stride,) = np.atleast_1d(conv.strides)
    (dilation,) = np.atleast_1d(conv.kernel_dilation or 1)
    form = chosen_form(policy, in_g, out_ch, int(stride), conv.feature_group_count)
    if form == "xla":
        return conv(x)
    if conv.padding == "VALID":
        padding = (0, 0)
    elif conv.padding == "SAME":
        padding = same_padding(x.shape[1], taps, int(stride), int(dilation))
    else:
        raise ValueError(f"apply_conv: padding {conv.padding!r} is not VALID or SAME")
    bias = None if conv.bias is None else conv.bias[...]
    dtype = conv.dtype or jnp.result_type(x, kernel)
    y = conv1d(x.astype(dtype), kernel.astype(dtype), stride=int(stride), dilation=int(dilation),
               padding=padding, groups=conv.feature_group_count, form=form)
    return y if bias is None else y + bias.astype(dtype)
