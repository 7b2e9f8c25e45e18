"""Stage language models: decoder-only Transformer with T5 relative bias, KV cache, layouts.

Names are imported lazily (PEP 562) so that `audiolm_jax.lm.layouts`, which input pipelines
use, imports numpy alone and never pulls in JAX or Flax.
"""
import importlib

_EXPORTS = {
    "LayerCache": "attention", "fast_causal_attention": "attention", "reference_attention": "attention",
    "TransformerConfig": "config",
    "flops_per_token": "flops", "matmul_params": "flops", "param_count": "flops",
    "lm_loss": "loss",
    "RelativePositionBias": "relative_bias", "relative_position_bucket": "relative_bias",
    "logical_constraint": "sharding_hook", "no_constraint": "sharding_hook",
    "split_bias_attention": "split_attention",
    "KVCache": "transformer", "Transformer": "transformer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'audiolm_jax.lm' has no attribute {name!r}")
    return getattr(importlib.import_module(f"audiolm_jax.lm.{_EXPORTS[name]}"), name)
