"""w2v-BERT's pretraining losses, as pure jit-able functions for the generic trainer.

    L = contrastive_weight * (L_contrastive + diversity_weight * L_diversity) + mlm_weight * L_mlm

- contrastive (wav2vec 2.0's InfoNCE): at each masked frame, the context vector must pick its own
  quantised target among itself and `num_distractors` targets drawn uniformly from the other masked
  frames of the same utterance; cosine similarity / temperature. A distractor with the same code
  as the target is ignored (it is not a wrong answer).
- diversity: 1 - mean_g exp(H(p_g)) / entries, with p_g the quantiser's softmax averaged over all
  valid frames of the batch: 0 when codes are used uniformly, 1 - 1 / entries when one code is.
- MLM: cross-entropy of the MLM head against the quantiser's argmax ids at masked frames only.

`pretraining_loss(model, wav, rng, step)` returns (loss, metrics); `batch_loss` is the same in the
trainer's `loss_fn(model, batch, rng, step)` form (training/objective.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from audiolm_jax.semantic import draws
from audiolm_jax.semantic.masking import span_mask
from audiolm_jax.semantic.quantizer import gumbel_temperature
from audiolm_jax.semantic.w2v_bert import W2vBert, valid_frames

_NEG_INF = -1e9


def _normalize(x: jnp.ndarray) -> jnp.ndarray:
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def sample_distractors(key: jax.Array, mask: jnp.ndarray, num: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """For every frame, `num` frame indices drawn uniformly from the *other* masked frames.

    Args:
      mask: bool [batch, frames].
    Returns:
      index int32 [batch, frames, num] and usable bool [batch, 1, 1] (False where an utterance
      has fewer than two masked frames, so there is nothing to draw).
    """
    n_masked = mask.sum(-1)  # [batch]
    # Masked frames first (in time order), then the rest: order[b, r] is the r-th masked frame.
    order = jnp.argsort(~mask, axis=-1, stable=True)
    rank = jnp.cumsum(mask, axis=-1) - 1  # rank of each masked frame among the masked
    high = jnp.maximum(n_masked - 1, 1)[:, None, None]
    u = draws.randint(key, (*mask.shape, num), high)
    u = u + (u >= rank[..., None])  # skip the frame itself
    index = jnp.take_along_axis(order, u.reshape(mask.shape[0], -1), axis=-1).reshape(u.shape)
    return index.astype(jnp.int32), (n_masked >= 2)[:, None, None]


def contrastive_loss(context: jnp.ndarray, targets: jnp.ndarray, mask: jnp.ndarray, key: jax.Array,
                     num_distractors: int = 100, temperature: float = 0.1,
                     target_ids: jnp.ndarray | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """InfoNCE over masked frames.

    Args:
      context: [batch, frames, dim] predictions; targets: [batch, frames, dim] quantised vectors.
      mask: bool [batch, frames]; the loss is the mean over masked frames.
      key: draws the distractors.
      target_ids: int [batch, frames, groups] codes of the targets; distractors sharing the
        target's codes are ignored. None: no such check.
    Returns:
      (loss, accuracy): accuracy is the fraction of masked frames whose target scores highest.
    """
    # All pairwise similarities [batch, frames, frames] are cheaper than gathering distractor
    # vectors [batch, frames, num, dim] once num * dim exceeds frames.
    sim = jnp.einsum("btd,bsd->bts", _normalize(context.astype(jnp.float32)),
                     _normalize(targets.astype(jnp.float32)), precision="highest") / temperature
    positive = jnp.diagonal(sim, axis1=1, axis2=2)[..., None]  # [batch, frames, 1]
    index, usable = sample_distractors(key, mask, num_distractors)
    negative = jnp.take_along_axis(sim, index, axis=-1)
    keep = jnp.broadcast_to(usable, negative.shape)
    if target_ids is not None:
        same = jnp.all(target_ids[:, :, None, :] == target_ids[:, None, :, :], axis=-1)  # [b, t, s]
        keep = keep & ~jnp.take_along_axis(same, index, axis=-1)
    negative = jnp.where(keep, negative, _NEG_INF)
    logits = jnp.concatenate([positive, negative], axis=-1)
    per_frame = jax.nn.logsumexp(logits, axis=-1) - logits[..., 0]
    weight = mask.astype(jnp.float32)
    count = jnp.maximum(weight.sum(), 1.0)
    correct = (positive[..., 0] > jnp.max(negative, axis=-1)).astype(jnp.float32)
    return (per_frame * weight).sum() / count, (correct * weight).sum() / count


def diversity_loss(code_logits: jnp.ndarray, valid: jnp.ndarray | None = None
                   ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Codebook diversity penalty.

    Args:
      code_logits: [batch, frames, groups, entries] quantiser logits.
      valid: bool [batch, frames] frames to average over, or None (all).
    Returns:
      (loss in [0, 1 - 1/entries], perplexity [groups] = exp(entropy of the averaged softmax)).
    """
    probs = jax.nn.softmax(code_logits.astype(jnp.float32), axis=-1)
    w = jnp.ones(code_logits.shape[:2], jnp.float32) if valid is None else valid.astype(jnp.float32)
    avg = jnp.einsum("bt,btgv->gv", w, probs) / jnp.maximum(w.sum(), 1.0)
    entropy = -jnp.sum(avg * jnp.log(jnp.maximum(avg, 1e-12)), axis=-1)
    perplexity = jnp.exp(entropy)
    return 1.0 - jnp.mean(perplexity) / code_logits.shape[-1], perplexity


def mlm_loss(logits: jnp.ndarray, target_ids: jnp.ndarray, mask: jnp.ndarray
             ) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Cross-entropy at masked frames only.

    Args:
      logits: [batch, frames, groups, entries]; target_ids: int [batch, frames, groups];
      mask: bool [batch, frames].
    Returns:
      (loss averaged over masked frames and groups, accuracy on the same).
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, target_ids[..., None].astype(jnp.int32), axis=-1)[..., 0]
    correct = (jnp.argmax(logits, axis=-1) == target_ids).astype(jnp.float32)
    w = mask.astype(jnp.float32)[..., None]
    count = jnp.maximum(w.sum() * logits.shape[2], 1.0)
    return (nll * w).sum() / count, (correct * w).sum() / count


def pretraining_loss(model: W2vBert, wav: jnp.ndarray, rng: jax.Array, step=0,
                     valid: jnp.ndarray | None = None) -> tuple[jnp.ndarray, dict]:
    """The w2v-BERT pretraining loss of a batch.

    Args:
      model: the W2vBert being trained.
      wav: float [batch, samples] at 16 kHz.
      rng: key for the mask, dropout, Gumbel noise and distractors (deterministic in it).
      step: training step (may be traced): sets the Gumbel temperature.
      valid: bool [batch, frames] (padding False) or None.
    Returns:
      (scalar loss, metrics dict of scalars).
    """
    cfg = model.config
    mask_key, model_key, distractor_key = jax.random.split(rng, 3)
    shape = (wav.shape[0], model.num_frames(wav.shape[-1]))
    mask = span_mask(mask_key, shape, cfg.mask_prob, cfg.mask_span, valid)
    tau = gumbel_temperature(step, cfg.gumbel_start, cfg.gumbel_end, cfg.gumbel_decay)
    out = model(wav, mask=mask, valid=valid, rng=model_key, gumbel_tau=tau)
    l_contrastive, acc_contrastive = contrastive_loss(
        out.context, out.targets, mask, distractor_key, cfg.num_distractors,
        cfg.contrastive_temperature, out.quantized.sampled_ids)
    l_diversity, perplexity = diversity_loss(out.quantized.logits, valid)
    l_mlm, acc_mlm = mlm_loss(out.mlm_logits, jax.lax.stop_gradient(out.quantized.ids), mask)
    loss = (cfg.contrastive_weight * (l_contrastive + cfg.diversity_weight * l_diversity)
            + cfg.mlm_weight * l_mlm)
    metrics = {
        "loss": loss, "contrastive_loss": l_contrastive, "contrastive_accuracy": acc_contrastive,
        "diversity_loss": l_diversity, "code_perplexity": jnp.mean(perplexity),
        "mlm_loss": l_mlm, "mlm_accuracy": acc_mlm, "gumbel_tau": tau,
        "mask_fraction": mask.mean(),
    }
    return loss, metrics


def batch_loss(model: W2vBert, batch, rng: jax.Array, step) -> tuple[jnp.ndarray, dict]:
    """`pretraining_loss` in the trainer's `loss_fn(model, batch, rng, step)` form.

    batch: {"audio": float [batch, samples] 16 kHz, optional "audio_length": int [batch] samples
    (padding after it is excluded from masking, attention and the losses)}.
    """
    wav = batch["audio"]
    valid = None
    if "audio_length" in batch:
        valid = valid_frames(batch["audio_length"], model.num_frames(wav.shape[-1]), model.config)
    return pretraining_loss(model, wav, rng, step, valid)
