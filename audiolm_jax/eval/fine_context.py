"""What stage 3 loses when it decodes shorter chunks: the teacher-forced log-likelihood of the
true fine codes of held-out utterances, cut into chunks of several lengths.

The fine stage is trained on 3 s crops and generation cuts the frames into non-overlapping
chunks (`GenerationConfig.fine_chunk_s`, 3 s in the paper), each one row of the batch; every
chunk decodes (frames x fine levels) steps, so 1 s chunks need a third of the steps of 3 s ones
(benchmarks/generate.py `--fine-chunk-seconds`). The price is context: a chunk sees only its own
coarse codes and its earlier fine codes. This scores that price on data: for each chunk length,
every utterance of a token cache is cut exactly as `generate_fine` cuts it (`fine_chunks`),
each chunk becomes the training layout (`layouts.fine_example`: its coarse levels, SEP, its fine
levels), and one causal forward pass gives log p of every true fine token. Reported per chunk
length: nats per fine token and argmax accuracy over all tokens, and the nats per token it adds
to the first length listed (the same tokens are scored at every length, so the difference is
paired), each with a 95% bootstrap interval over utterances. Log-probabilities are over the
whole vocabulary, the distribution the stage was trained on.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from audiolm_jax.eval.semantic_loglik import bucket_length
from audiolm_jax.eval.stats import bootstrap_ratio_ci
from audiolm_jax.generate.timing import fine_chunks
from audiolm_jax.lm.layouts import PAD, AudioVocabulary, StageExample, fine_example
from audiolm_jax.lm.loss import token_scores
from audiolm_jax.lm.transformer import Transformer


def chunk_examples(codes: np.ndarray, vocab: AudioVocabulary, num_coarse: int,
                   chunk_frames: int) -> list[StageExample]:
    """The stage-3 examples of one utterance's codes int [frames, Q] cut into chunks of at most
    `chunk_frames` frames, as `generate_fine` cuts generated frames."""
    codes = np.asarray(codes)
    return [fine_example(codes[a:b], vocab, num_coarse)
            for a, b in fine_chunks(0, codes.shape[0], chunk_frames)]


def example_scores(model: Transformer, examples: Sequence[StageExample], rows: int = 32,
                   bucket: int = 256) -> np.ndarray:
    """float64 [len(examples), 3]: per example, the sum of log p over its loss positions, the
    tokens scored and the tokens the argmax hit.

    The examples go through in batches of `rows` (fewer if there are fewer), all right-padded
    to one width (the longest, up to a multiple of `bucket`), so one chunk length compiles one
    program; padding lies after every real position, which a causal model cannot see, and
    outside the loss mask."""
    width = bucket_length(max(e.inputs.size for e in examples), bucket)
    rows = min(rows, len(examples))
    graphdef, state = nnx.split(model)
    out = np.zeros((len(examples), 3))
    for first in range(0, len(examples), rows):
        part = examples[first:first + rows]
        inputs = np.full((rows, width), PAD, np.int32)
        targets = np.full((rows, width), PAD, np.int32)
        mask = np.zeros((rows, width), bool)
        for row, e in enumerate(part):
            inputs[row, :e.inputs.size], targets[row, :e.targets.size] = e.inputs, e.targets
            mask[row, :e.loss_mask.size] = e.loss_mask > 0
        logp, hit = token_scores(graphdef, state, jnp.asarray(inputs), jnp.asarray(targets))
        logp, hit = np.asarray(logp, np.float64), np.asarray(hit)
        for row in range(len(part)):
            keep = mask[row]
            out[first + row] = logp[row][keep].sum(), keep.sum(), hit[row][keep].sum()
    return out


def fine_context_table(model: Transformer, vocab: AudioVocabulary, num_coarse: int,
                       utterances: Iterable[np.ndarray], chunk_seconds: Sequence[float],
                       frame_rate: float, *, seed: int = 0) -> dict:
    """{chunk seconds: nats per fine token, accuracy, the nats added to the first length, 95%
    CIs over utterances, counts} for each length in `chunk_seconds`, over utterances given as
    acoustic codes int [frames, Q]."""
    utterances = [np.asarray(u) for u in utterances]
    if not utterances:
        raise ValueError("fine_context_table: no utterances to score (an empty token cache?)")
    table, first = {}, None
    for seconds in chunk_seconds:
        chunk_frames = int(round(seconds * frame_rate))
        if chunk_frames < 1:
            raise ValueError(f"chunk of {seconds} s is under one frame at {frame_rate} Hz")
        examples, owner = [], []
        for index, codes in enumerate(utterances):
            chunks = chunk_examples(codes, vocab, num_coarse, chunk_frames)
            examples += chunks
            owner += [index] * len(chunks)
        scores = example_scores(model, examples)
        # Per utterance: nats, tokens and hits summed over its chunks.
        nats, tokens, hits = (np.bincount(owner, weights=scores[:, j], minlength=len(utterances))
                              for j in range(3))
        nats = -nats
        first = nats if first is None else first
        table[f"{seconds:g}"] = {
            "chunk_frames": chunk_frames, "nats_per_token": float(nats.sum() / tokens.sum()),
            "nats_per_token_ci95": list(bootstrap_ratio_ci(nats, tokens, seed=seed)),
            "extra_nats_per_token": float((nats - first).sum() / tokens.sum()),
            "extra_nats_per_token_ci95": list(bootstrap_ratio_ci(nats - first, tokens, seed=seed)),
            "accuracy": float(hits.sum() / tokens.sum()),
            "tokens": int(tokens.sum()), "utterances": len(utterances)}
    return table
