"""w2v-BERT pretraining as a trainer `Objective` (training/objective.py): one "model" group.

A gin experiment binds it as

    include 'models/w2v_bert_tiny.gin'        # the W2vBertConfig
    train.objective = @W2vBertObjective()
    W2vBertObjective.dtype = 'bfloat16'       # keep it equal to train.compute_dtype
    train.train_data = @train_crops/audio_crop_batches   # {"audio", "audio_length"} batches

Training is `objectives.batch_loss` (contrastive + diversity + MLM with span masking). Evaluation
runs the same masked task with everything that is random in training made deterministic: no
dropout, argmax (not Gumbel-sampled) codes, and masks, noise vectors and distractors drawn from a
fixed key, so eval numbers from different steps and runs are comparable.
"""
from __future__ import annotations

from typing import Mapping

import gin
import jax
import jax.numpy as jnp
from flax import nnx

from audiolm_jax.audio import SAMPLE_RATE
from audiolm_jax.semantic import draws
from audiolm_jax.semantic.masking import span_mask
from audiolm_jax.semantic.objectives import batch_loss, contrastive_loss, diversity_loss, mlm_loss
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig, valid_frames
from audiolm_jax.training.objective import Batch, Metrics, Objective, OptimizerGroup, StepCost


def code_usage_perplexity(ids: jnp.ndarray, valid: jnp.ndarray | None, entries: int) -> jnp.ndarray:
    """exp(entropy) of the histogram of codes ids int [batch, frames, groups] over the valid
    frames (bool [batch, frames] or None), averaged over groups: 1 when one code is used, up to
    `entries`. Chance accuracy of guessing the most common code is about its inverse."""
    w = jnp.ones(ids.shape[:2], jnp.float32) if valid is None else valid.astype(jnp.float32)
    counts = jnp.einsum("bt,btgv->gv", w, jax.nn.one_hot(ids, entries, dtype=jnp.float32))
    p = counts / jnp.maximum(counts.sum(-1, keepdims=True), 1.0)
    entropy = -jnp.sum(p * jnp.log(jnp.maximum(p, 1e-12)), axis=-1)
    return jnp.mean(jnp.exp(entropy))


def eval_metrics(model: W2vBert, batch: Batch, key: jax.Array) -> Metrics:
    """The pretraining task in evaluation mode.

    Args:
      model: the W2vBert (dropout is only ever applied with a key, and none is passed here).
      batch: {"audio": float [batch, samples] 16 kHz, optional "audio_length": int [batch]}.
      key: draws the masks, the random vectors of masked frames and the distractors.
    Returns:
      scalars: loss (as in training), contrastive_loss, contrastive_accuracy (target ranked
      first among itself and the distractors), mlm_loss, mlm_accuracy (argmax of the MLM head
      equals the quantiser's code), diversity_loss, code_perplexity (of the averaged softmax, as
      in training), target_perplexity (`code_usage_perplexity` of the argmax codes: near 1 means
      a collapsed quantiser, under which both accuracies are trivially high), mask_fraction.
    """
    cfg = model.config
    wav = batch["audio"]
    frames = model.num_frames(wav.shape[-1])
    valid = None
    if "audio_length" in batch:
        valid = valid_frames(batch["audio_length"], frames, cfg)
    mask_key, noise_key, distractor_key = jax.random.split(key, 3)
    mask = span_mask(mask_key, (wav.shape[0], frames), cfg.mask_prob, cfg.mask_span, valid)
    z = model.encode(wav, valid)
    targets = model.quantizer(z)  # no key: argmax codes of the unmasked features
    # The masked input of training (masked frames replaced by random vectors), then the
    # deterministic forward pass over it; its own quantiser output is unused.
    noise = draws.normal(noise_key, z.shape, z.dtype)
    out = model.forward_features(jnp.where(mask[..., None], noise, z), valid=valid)
    target_vectors = model.target_proj(targets.vectors).astype(jnp.float32)
    l_contrastive, acc_contrastive = contrastive_loss(
        out.context, target_vectors, mask, distractor_key, cfg.num_distractors,
        cfg.contrastive_temperature, targets.ids)
    l_diversity, perplexity = diversity_loss(targets.logits, valid)
    l_mlm, acc_mlm = mlm_loss(out.mlm_logits, targets.ids, mask)
    loss = (cfg.contrastive_weight * (l_contrastive + cfg.diversity_weight * l_diversity)
            + cfg.mlm_weight * l_mlm)
    return {"loss": loss, "contrastive_loss": l_contrastive,
            "contrastive_accuracy": acc_contrastive, "mlm_loss": l_mlm, "mlm_accuracy": acc_mlm,
            "diversity_loss": l_diversity, "code_perplexity": jnp.mean(perplexity),
            "target_perplexity": code_usage_perplexity(targets.ids, valid, cfg.codebook_entries),
            "mask_fraction": mask.mean()}


@gin.configurable
class W2vBertObjective(Objective):
    """w2v-BERT self-supervised pretraining.

    Args:
      config: the model and loss settings; None builds the gin-bound `W2vBertConfig()`.
      dtype: compute dtype of the model's layers ("bfloat16" on accelerators). Bind it to the
        same value as `train.compute_dtype`, which casts the params for the forward pass.
      eval_seed: seed of the fixed evaluation key (see `eval_metrics`).
    """

    def __init__(self, config: W2vBertConfig | None = None, dtype: str = "float32",
                 eval_seed: int = 0):
        self.config = config if config is not None else W2vBertConfig()
        self.dtype = jnp.dtype(dtype)
        self.eval_seed = int(eval_seed)

    def create_model(self, rngs: nnx.Rngs) -> W2vBert:
        return W2vBert(self.config, rngs=rngs, dtype=self.dtype)

    def optimizer_groups(self) -> list[OptimizerGroup]:
        # optimizer=None: OptimizerConfig() in the gin scope "model" (unscoped bindings apply).
        return [OptimizerGroup("model", batch_loss)]

    def eval_step(self, model: W2vBert, batch: Batch) -> Metrics:
        return eval_metrics(model, batch, jax.random.key(self.eval_seed))

    def step_cost(self, batch: Mapping[str, jax.ShapeDtypeStruct]) -> StepCost:
        """Audio seconds per global batch (padding included: it is computed on); FLOPs from XLA."""
        shape = batch["audio"].shape
        return StepCost(audio_seconds=shape[0] * shape[-1] / SAMPLE_RATE)
