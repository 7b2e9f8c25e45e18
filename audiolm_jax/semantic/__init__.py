"""The semantic tokenizer: w2v-BERT (Conformer, contrastive + MLM pretraining), per-dimension
standardisation and k-means, giving AudioLM's semantic token ids at 25 Hz.

    conformer.py     Conformer block (relative-position attention, conv module)
    draws.py         random draws that compile fast on XLA:CPU
    w2v_bert.py      the model and its config (XL and tiny in gin/models/w2v_bert_*.gin)
    quantizer.py     Gumbel product quantiser (targets of the contrastive and MLM tasks)
    masking.py       span masking
    objectives.py    contrastive, diversity and MLM losses; `pretraining_loss` for the trainer
    standardize.py   streamed mean/std of activations
    kmeans.py        k-means++ / Lloyd / mini-batch k-means, chunked and shardable
    tokenizer.py     SemanticTokenizer (tokenize, save, load) and fit_semantic_tokenizer
"""
from audiolm_jax.semantic.kmeans import KMeansResult, kmeans_assign, kmeans_fit
from audiolm_jax.semantic.masking import expected_mask_fraction, span_mask
from audiolm_jax.semantic.objectives import (
    batch_loss,
    contrastive_loss,
    diversity_loss,
    mlm_loss,
    pretraining_loss,
)
from audiolm_jax.semantic.quantizer import GumbelQuantizer, gumbel_temperature
from audiolm_jax.semantic.standardize import (
    Moments,
    batch_moments,
    empty_moments,
    mean_and_std,
    merge_moments,
    standardize,
    update_moments,
)
from audiolm_jax.semantic.tokenizer import SemanticTokenizer, fit_semantic_tokenizer
from audiolm_jax.semantic.w2v_bert import (
    W2vBert,
    W2vBertConfig,
    W2vBertOutput,
    count_params,
    num_frames,
    valid_frames,
)

__all__ = [
    "W2vBert", "W2vBertConfig", "W2vBertOutput", "count_params", "num_frames", "valid_frames",
    "GumbelQuantizer", "gumbel_temperature", "span_mask", "expected_mask_fraction",
    "contrastive_loss", "diversity_loss", "mlm_loss", "pretraining_loss", "batch_loss",
    "Moments", "empty_moments", "batch_moments", "merge_moments", "update_moments",
    "mean_and_std", "standardize",
    "KMeansResult", "kmeans_fit", "kmeans_assign",
    "SemanticTokenizer", "fit_semantic_tokenizer",
]
