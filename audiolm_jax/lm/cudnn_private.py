"""cuDNN flash attention through jax's private entry points, for what the public API cannot do.

`jax.nn.dot_product_attention` always asks cuDNN for the bias gradient when a bias is passed,
and its backward pass only ever sees the residuals of its own forward. Two attention paths need
more (docs/RESULTS.md, issue #7):
- `band_grad_attention`: the biased forward with a backward pass that skips the [heads, T, T]
  bias gradient (`attention`);
- `split_lse_attention`: the unbiased causal backward run on residuals it supplies itself, the
  output and log-normaliser of a merged softmax (`causal_backward`), as ring attention does.

Both entry points are checked against the parameter lists written here (jax 0.10 to 0.11);
`available()` is False on a jax whose private functions differ, and callers then take a
public route.

Shapes: query/key/value/out [batch, length, heads, head_dim] (the BTNH layout); lse [batch,
heads, length] f32, the natural-log normaliser of the scaled logits.
"""
from __future__ import annotations

import inspect

import jax.numpy as jnp

_FORWARD_PARAMETERS = (
    "query", "key", "value", "bias", "q_seqlen", "kv_seqlen", "q_offsets", "kv_offsets",
    "page_table_k", "page_table_v", "scale", "seed", "dropout_rate", "variadic_args",
    "mask_type", "layout", "sliding_window_length", "cudnn_version", "return_residual")
# The custom VJP's backward rule: the forward's static arguments (the 8th, named
# `is_training` there, receives cudnn_version), the residuals, the output's cotangent.
_BACKWARD_PARAMETERS = (
    "scale", "seed", "dropout_rate", "variadic_args", "mask_type", "layout",
    "sliding_window_length", "is_training", "return_residual", "res", "grad_output")


def _module():
    """jax's private cuDNN attention module when both signatures are the ones written against."""
    try:
        from jax._src.cudnn import fused_attention_stablehlo as fused
        forward = tuple(inspect.signature(fused._dot_product_attention).parameters)
        backward = tuple(inspect.signature(fused._dot_product_attention_bwd_rule).parameters)
    except (ImportError, AttributeError, ValueError, TypeError):
        return None
    return fused if (forward, backward) == (_FORWARD_PARAMETERS, _BACKWARD_PARAMETERS) else None


def available() -> bool:
    return _module() is not None


def _static(fused, has_bias: bool, scale: float) -> tuple:
    """The forward's static arguments: causal, BTNH, no dropout, the bias without its gradient."""
    return (scale, 0, 0.0, (has_bias, False), fused.MaskType.CAUSAL,
            fused.AttentionLayout.BTNH.value, None, fused.check_cudnn_version(), True)


def attention(query, key, value, bias, scale: float):
    """(out, lse): causal flash attention, with an additive `bias` [1, heads, T, T] or None.
    Differentiable in query, key and value; the backward pass computes no bias gradient. With a
    bias the length must be even (cuDNN's rule)."""
    fused = _module()
    unused = jnp.zeros(0, query.dtype)
    bias = unused if bias is None else bias.astype(query.dtype)
    return fused._dot_product_attention(query, key, value, bias, *(unused,) * 6,
                                        *_static(fused, bias.size > 0, scale))


def causal_backward(query, key, value, out, lse, d_out, scale: float):
    """(d_query, d_key, d_value) of unbiased causal attention, from the residuals given: the
    kernel recomputes the weights as exp(scale q.k - lse) and subtracts D = d_out . out per
    query. With the forward's own out and lse that is the ordinary gradient; with a merged
    softmax's (`split_lse_attention`) it is this part's share of the merged gradient."""
    fused = _module()
    unused = jnp.zeros(0, query.dtype)
    residuals = (query, key, value, unused, *(unused,) * 6, lse, out.astype(query.dtype))
    grads = fused._dot_product_attention_bwd_rule(
        *_static(fused, False, scale), residuals, (d_out.astype(query.dtype), jnp.zeros_like(lse)))
    return grads[:3]
