"""Model size and training FLOPs per token (for MFU), counted as PaLM (app. B) and MaxText do.

flops_per_token = 6 * N + 12 * L * H * Q * T
  N: parameters that take part in matrix multiplies (attention and feed-forward kernels of every
     layer plus the output projection; not the embedding lookup, norms or relative bias);
  L layers, H heads, Q head size, T sequence length: the attention score and value products,
  counted over the full T x T square as PaLM does (causal masking not discounted).
The factor 6 is forward (2) + backward (4) multiply-adds.
"""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.transformer import Transformer


def matmul_params(config: TransformerConfig) -> int:
    """N above: weights used in matrix multiplies per token."""
    d, f = config.d_model, config.d_ff
    attention = 4 * d * config.num_heads * config.head_dim           # q, k, v, out
    feed_forward = (3 if config.feed_forward == "gated_gelu" else 2) * d * f
    output = d * config.padded_vocab_size                             # tied or not, one matmul
    return config.num_layers * (attention + feed_forward) + output


def flops_per_token(config: TransformerConfig, seq_len: int) -> float:
    """Training FLOPs per token at sequence length `seq_len` (see module docstring)."""
    attention = 12 * config.num_layers * config.num_heads * config.head_dim * seq_len
    return float(6 * matmul_params(config) + attention)


def param_count(config: TransformerConfig) -> int:
    """Number of parameters, from shapes only (`nnx.eval_shape`: nothing is allocated)."""
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    return int(sum(np.prod(leaf.shape) for leaf in leaves))
