"""Next-token cross-entropy over the positions a stage predicts (batch["loss_mask"] == 1), and
the per-token log-probabilities the evaluations score held-out sequences with."""
from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from audiolm_jax.lm.transformer import Transformer


def lm_loss(model: Transformer, batch: Mapping[str, jax.Array], rng: jax.Array | None,
            train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Mean token cross-entropy over target positions, and metrics.

    Args:
      model: the stage Transformer.
      batch: "inputs" int [batch, length] (shifted right, BOS first), "targets" int
        [batch, length], "loss_mask" [batch, length] (1 where the stage predicts the target,
        0 on prefixes/conditioning and padding), as `audiolm_jax.lm.layouts` builds them.
      rng: dropout key (used only when train=True).
      train: dropout on/off.
    Returns:
      (loss, metrics): loss = sum(mask * ce) / max(sum(mask), 1); metrics hold loss, accuracy
      (argmax == target over masked positions), target_tokens (sum of mask), tokens (all
      positions processed, batch * length) and correct (number of right argmax predictions).
    """
    for name in ("inputs", "targets", "loss_mask"):
        if name not in batch:
            raise KeyError(f"lm_loss: batch has no {name!r} (keys: {sorted(batch)}); build batches "
                           "with audiolm_jax.lm.layouts (inputs, targets, loss_mask)")
    logits = model(batch["inputs"], train=train, dropout_rng=rng)
    targets = batch["targets"]
    mask = batch["loss_mask"].astype(jnp.float32)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    target_tokens = jnp.sum(mask)
    denominator = jnp.maximum(target_tokens, 1.0)
    loss = jnp.sum(cross_entropy * mask) / denominator
    correct = jnp.sum((jnp.argmax(logits, axis=-1) == targets) * mask)
    metrics = {
        "loss": loss,
        "accuracy": correct / denominator,
        "correct": correct,
        "target_tokens": target_tokens,
        "tokens": jnp.asarray(targets.size, jnp.float32),
    }
    return loss, metrics


@functools.partial(jax.jit, static_argnames=("graphdef",))
def token_scores(graphdef, state, inputs: jax.Array, targets: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
    """One causal pass of the Transformer `nnx.merge(graphdef, state)` (dropout off): float32
    [batch, length] log p(targets[:, i] | inputs[:, :i + 1]) over the whole vocabulary, and
    bool [batch, length] whether the argmax is the target."""
    model: Transformer = nnx.merge(graphdef, state)
    logp = jax.nn.log_softmax(model(inputs).astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return picked, jnp.argmax(logp, axis=-1) == targets
