"""Log-likelihood of audio under the stage-1 (semantic) LM: the `loglik_fn` of `eval.pairs`.

wav -> semantic ids (SemanticTokenizer, on the wav zero-padded to a multiple of
`audio_bucket_seconds`: one compile per bucket, not per length) -> stage-1 sequence (`layouts.semantic_sequence`,
deduplicated as in training) -> model input with BOS first (`layouts.prompt_tokens` minus the
last token, i.e. the training shift) -> one causal forward pass -> sum over every token of
log p(token | BOS, earlier tokens), and the number of tokens.

The forward pass is jitted at bucketed lengths (multiples of `bucket`), so pairs of many
lengths compile a handful of times; the right padding cannot reach earlier positions (causal
attention, relative positions), and its positions are masked out of the sum. Log-probabilities
are over the model's whole vocabulary, the distribution the stage was trained on.
"""
from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

from audiolm_jax.lm.layouts import PAD, AudioVocabulary, prompt_tokens, semantic_sequence
from audiolm_jax.lm.loss import token_scores
from audiolm_jax.lm.transformer import Transformer
from audiolm_jax.semantic.tokenizer import FRAME_RATE_HZ, FRAME_SAMPLES, bucketed_ids


def bucket_length(num_tokens: int, bucket: int) -> int:
    """The padded length for `num_tokens`: the next multiple of `bucket` (at least one)."""
    if bucket < 1:
        raise ValueError(f"bucket={bucket} must be >= 1")
    return max(1, -(-num_tokens // bucket)) * bucket


class SemanticLoglik:
    """`loglik(wav) -> (sum_log_prob, num_tokens)` of a stage-1 model and its tokenizer.

    Args:
      model: the stage-1 Transformer (e.g. `generate.loading.load_stage_model(run)`).
      tokenizer: the SemanticTokenizer whose ids made the stage's training data.
      dedup: remove consecutive repeated ids, as the stage was trained (default).
      bucket: inputs are right-padded to a multiple of this many tokens.
      audio_bucket_seconds: the audio is zero-padded to a multiple of this for the tokenizer
        (`semantic.tokenizer.bucketed_ids`; a multiple of 40 ms).
    """

    def __init__(self, model: Transformer, tokenizer, *, dedup: bool = True, bucket: int = 64,
                 audio_bucket_seconds: float = 2.0):
        # Only the semantic part of the layout is used; the acoustic sizes do not matter here.
        self.vocab = AudioVocabulary(int(tokenizer.num_clusters), 0, 0)
        if model.config.vocab_size < self.vocab.size:
            raise ValueError(
                f"the stage-1 model's vocab_size is {model.config.vocab_size}, below the "
                f"{self.vocab.size} ids that a tokenizer of K={tokenizer.num_clusters} clusters "
                "needs; pass the tokenizer that made the stage's token cache")
        self.tokenizer, self.dedup, self.bucket = tokenizer, dedup, bucket
        self.audio_bucket = int(round(audio_bucket_seconds * FRAME_RATE_HZ)) * FRAME_SAMPLES
        if self.audio_bucket < FRAME_SAMPLES:
            raise ValueError(f"audio_bucket_seconds={audio_bucket_seconds} is below one 40 ms frame")
        self._graphdef, self._state = nnx.split(model)

    def sequence(self, wav: np.ndarray) -> np.ndarray:
        """The stage-1 token sequence of a 16 kHz mono wav (ids in the shared vocabulary)."""
        ids = bucketed_ids(self.tokenizer, np.asarray(wav, np.float32).reshape(-1),
                           self.audio_bucket)
        return semantic_sequence(ids, self.vocab, dedup=self.dedup)[0]

    def token_logprobs(self, sequence: np.ndarray, length: int | None = None) -> np.ndarray:
        """float32 [len(sequence)]: log p of each token given BOS and the tokens before it.
        `length` pads the model input (default: the bucket length)."""
        sequence = np.asarray(sequence, np.int32).reshape(-1)
        n = sequence.size
        if n == 0:
            raise ValueError("an empty stage-1 sequence has no log-likelihood; the audio gave no "
                             "semantic frames (it is shorter than 40 ms)")
        length = bucket_length(n, self.bucket) if length is None else length
        if length < n:
            raise ValueError(f"length={length} is shorter than the {n}-token sequence")
        inputs = prompt_tokens(sequence)[:-1]          # [BOS] + sequence[:-1]: the training shift
        pad = (0, length - n)
        inputs = np.pad(inputs, pad, constant_values=PAD)[None]
        targets = np.pad(sequence, pad, constant_values=PAD)[None]
        logp, _ = token_scores(self._graphdef, self._state, jnp.asarray(inputs),
                               jnp.asarray(targets))
        return np.asarray(logp[0, :n])                 # the padding is dropped here

    def sequence_loglik(self, sequence: np.ndarray, length: int | None = None) -> tuple[float, int]:
        logp = self.token_logprobs(sequence, length)
        return float(np.sum(logp, dtype=np.float64)), int(logp.size)

    def __call__(self, wav: np.ndarray) -> tuple[float, int]:
        return self.sequence_loglik(self.sequence(wav))


def load_semantic_loglik(semantic_run: str | os.PathLike, tokenizer_dir: str | os.PathLike, *,
                         dtype: str | None = "float32", dedup: bool = True,
                         bucket: int = 64, audio_bucket_seconds: float = 2.0) -> SemanticLoglik:
    """A `SemanticLoglik` from a stage-1 run (workdir, step folder or export) and a tokenizer
    directory (`audiolm-jax semantic fit-kmeans`)."""
    from audiolm_jax.generate.loading import load_stage_model  # noqa: PLC0415
    from audiolm_jax.semantic.tokenizer import SemanticTokenizer  # noqa: PLC0415

    model = load_stage_model(semantic_run, dtype=dtype, what="semantic (stage-1)")
    return SemanticLoglik(model, SemanticTokenizer.load(tokenizer_dir), dedup=dedup, bucket=bucket,
                          audio_bucket_seconds=audio_bucket_seconds)
