"""eval/fine_context.py: stage 3's teacher-forced log-likelihood with the frames cut into chunks
as generation cuts them, against a plain per-chunk recomputation."""
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.eval.fine_context import chunk_examples, example_scores, fine_context_table
from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.layouts import AudioVocabulary, fine_example
from audiolm_jax.lm.transformer import Transformer

VOCAB = AudioVocabulary(64, 4, 32)                  # 3 + 64 + 4 * 32 = 195 ids (lm_tiny)
CONFIG = TransformerConfig(vocab_size=195, num_layers=2, num_heads=4, d_model=64, d_ff=128,
                           dropout_rate=0.0)
NUM_COARSE = 2


@pytest.fixture(scope="module")
def model():
    return Transformer(CONFIG, rngs=nnx.Rngs(0))


def _codes(frames, seed):
    return np.random.default_rng(seed).integers(0, 32, (frames, 4)).astype(np.int32)


def _by_hand(model, examples):
    """Sum of log p over the loss positions, one unpadded forward pass per example."""
    total, tokens = 0.0, 0
    for e in examples:
        logp = np.asarray(jax.nn.log_softmax(model(e.inputs[None])[0]), np.float64)
        keep = e.loss_mask > 0
        total += float(logp[np.arange(e.targets.size), e.targets][keep].sum())
        tokens += int(keep.sum())
    return total, tokens


def test_chunks_are_cut_as_generation_cuts_them():
    codes = _codes(7, 0)
    examples = chunk_examples(codes, VOCAB, NUM_COARSE, 3)
    assert len(examples) == 3
    for e, (a, b) in zip(examples, [(0, 3), (3, 6), (6, 7)]):
        ref = fine_example(codes[a:b], VOCAB, NUM_COARSE)
        np.testing.assert_array_equal(e.inputs, ref.inputs)
        np.testing.assert_array_equal(e.loss_mask, ref.loss_mask)
        assert e.loss_mask.sum() == (b - a) * (4 - NUM_COARSE)


def test_padded_batch_scores_equal_one_pass_per_chunk(model):
    examples = chunk_examples(_codes(11, 1), VOCAB, NUM_COARSE, 4)   # chunks of 4, 4, 3 frames
    scores = example_scores(model, examples, rows=2, bucket=8)       # batches of 2, padded rows
    for e, (logp, tokens, hits) in zip(examples, scores):
        want, want_tokens = _by_hand(model, [e])
        assert tokens == want_tokens and 0 <= hits <= tokens
        assert logp == pytest.approx(want, rel=1e-5)
    assert scores[:, 1].sum() == 11 * 2


def test_table_per_chunk_length(model):
    utterances = [_codes(9, 2), _codes(13, 3)]
    table = fine_context_table(model, VOCAB, NUM_COARSE, utterances, [0.4, 0.1], 50.0)
    whole, short = table["0.4"], table["0.1"]            # 20 frames (whole utterances), 5
    assert (whole["chunk_frames"], short["chunk_frames"]) == (20, 5)
    assert whole["tokens"] == short["tokens"] == (9 + 13) * 2 and whole["utterances"] == 2
    logp, tokens = map(sum, zip(*[_by_hand(model, chunk_examples(u, VOCAB, NUM_COARSE, 5))
                                  for u in utterances]))
    assert short["nats_per_token"] == pytest.approx(-logp / tokens, rel=1e-5)
    assert whole["extra_nats_per_token"] == 0.0
    assert short["extra_nats_per_token"] == pytest.approx(
        short["nats_per_token"] - whole["nats_per_token"], abs=1e-9)
    low, high = short["nats_per_token_ci95"]
    assert low <= short["nats_per_token"] <= high
    with pytest.raises(ValueError, match="no utterances"):
        fine_context_table(model, VOCAB, NUM_COARSE, [], [1.0], 50.0)


def test_cli_names_what_is_missing():
    proc = subprocess.run([sys.executable, "-m", "audiolm_jax.cli", "eval", "fine-context"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "--fine-run --tokens" in proc.stderr
