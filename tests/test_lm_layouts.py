"""Stage token layouts: dedup, row-major flattening with the paper's offsets, loss masks, inverses."""
import numpy as np
import pytest

from audiolm_jax.lm import layouts
from audiolm_jax.lm.layouts import BOS, PAD, SEP, AudioVocabulary

VOCAB = AudioVocabulary(semantic_size=10, num_quantizers=4, codebook_size=8)
NUM_COARSE = 2


def _codes(frames, seed=0, vocab=VOCAB):
    return np.random.default_rng(seed).integers(0, vocab.codebook_size, (frames, vocab.num_quantizers))


def test_dedup_known_inputs():
    np.testing.assert_array_equal(layouts.dedup_consecutive(np.array([5, 5, 7, 5, 5, 5, 1])), [5, 7, 5, 1])
    np.testing.assert_array_equal(layouts.dedup_consecutive(np.array([3])), [3])
    np.testing.assert_array_equal(layouts.dedup_consecutive(np.array([1, 2, 3])), [1, 2, 3])
    assert layouts.dedup_consecutive(np.array([], np.int32)).size == 0


def test_flatten_offsets_match_paper_formula():
    """o_i = ((i - 1) mod Q) * N for the i-th (1-based) token of the row-major sequence."""
    codes = _codes(7)
    q, n = VOCAB.num_quantizers, VOCAB.codebook_size
    flat = layouts.flatten_acoustic(codes, n)
    row_major = codes.reshape(-1)  # y_1^1, y_1^2, ..., y_1^Q, y_2^1, ...
    expected = [row_major[i - 1] + ((i - 1) % q) * n for i in range(1, codes.size + 1)]
    np.testing.assert_array_equal(flat, expected)


@pytest.mark.parametrize("q_start,q_end", [(0, 4), (0, 2), (2, 4), (1, 3)])
def test_flatten_unflatten_round_trip(q_start, q_end):
    codes = _codes(9, seed=q_start)
    flat = layouts.flatten_acoustic(codes, VOCAB.codebook_size, q_start, q_end)
    assert flat.shape == (9 * (q_end - q_start),)
    levels = np.arange(flat.size) % (q_end - q_start) + q_start   # each token keeps its level's offset
    np.testing.assert_array_equal(flat // VOCAB.codebook_size, levels)
    back = layouts.unflatten_acoustic(flat, VOCAB.codebook_size, q_start, q_end)
    np.testing.assert_array_equal(back, codes[:, q_start:q_end])


def test_unflatten_rejects_misaligned_and_partial():
    flat = layouts.flatten_acoustic(_codes(3), VOCAB.codebook_size, 0, 2)
    with pytest.raises(ValueError, match="misaligned"):
        layouts.unflatten_acoustic(flat[1:-1], VOCAB.codebook_size, 0, 2)
    with pytest.raises(ValueError, match="allow_partial"):
        layouts.unflatten_acoustic(flat[:-1], VOCAB.codebook_size, 0, 2)
    partial = layouts.unflatten_acoustic(flat[:-1], VOCAB.codebook_size, 0, 2, allow_partial=True)
    assert partial.shape == (2, 2)
    with pytest.raises(ValueError, match="acoustic code id 8"):
        layouts.flatten_acoustic(np.full((2, 4), 8), VOCAB.codebook_size)


def test_vocabulary_ranges_are_disjoint_and_cover_everything():
    ranges = [(0, layouts.NUM_SPECIALS), VOCAB.semantic_range()]
    ranges += [VOCAB.acoustic_range(q) for q in range(VOCAB.num_quantizers)]
    assert [r[0] for r in ranges[1:]] == [r[1] for r in ranges[:-1]]
    assert ranges[-1][1] == VOCAB.size == 3 + 10 + 4 * 8


def test_semantic_example_dedups_and_predicts_everything():
    semantic = np.array([4, 4, 4, 9, 9, 0, 4])
    example = layouts.semantic_example(semantic, VOCAB)
    np.testing.assert_array_equal(example.targets, np.array([4, 9, 0, 4]) + VOCAB.semantic_offset)
    np.testing.assert_array_equal(example.inputs, np.r_[BOS, example.targets[:-1]])
    np.testing.assert_array_equal(example.loss_mask, np.ones(4))
    np.testing.assert_array_equal(layouts.semantic_ids_from_tokens(example.targets, VOCAB), [4, 9, 0, 4])
    no_dedup = layouts.semantic_example(semantic, VOCAB, dedup=False)
    assert no_dedup.targets.size == semantic.size


def test_coarse_example_layout_mask_and_inverse():
    semantic = np.array([1, 1, 2, 3, 3])
    codes = _codes(6, seed=1)
    example = layouts.coarse_example(semantic, codes, VOCAB, NUM_COARSE)
    num_semantic = 3  # after dedup: 1, 2, 3
    assert example.targets.size == num_semantic + 1 + 6 * NUM_COARSE
    assert example.targets[num_semantic] == SEP
    mask = example.loss_mask.astype(bool)
    # The loss covers exactly the coarse acoustic tokens; y_1^1 is the first predicted token.
    assert not mask[: num_semantic + 1].any() and mask[num_semantic + 1:].all()
    np.testing.assert_array_equal(example.inputs, np.r_[BOS, example.targets[:-1]])
    np.testing.assert_array_equal(
        layouts.semantic_ids_from_tokens(example.targets[:num_semantic], VOCAB), [1, 2, 3])
    recovered = layouts.codes_from_tokens(example.targets[mask], VOCAB, 0, NUM_COARSE)
    np.testing.assert_array_equal(recovered, codes[:, :NUM_COARSE])
    ranges = layouts.acoustic_target_ranges(VOCAB, 0, NUM_COARSE, int(mask.sum()))
    assert ((example.targets[mask] >= ranges[:, 0]) & (example.targets[mask] < ranges[:, 1])).all()


def test_fine_example_layout_mask_and_inverse():
    codes = _codes(5, seed=2)
    example = layouts.fine_example(codes, VOCAB, NUM_COARSE)
    prefix = 5 * NUM_COARSE + 1
    assert example.targets[prefix - 1] == SEP
    mask = example.loss_mask.astype(bool)
    assert not mask[:prefix].any() and mask[prefix:].all()
    fine = layouts.codes_from_tokens(example.targets[mask], VOCAB, NUM_COARSE, VOCAB.num_quantizers)
    coarse = layouts.codes_from_tokens(example.targets[: prefix - 1], VOCAB, 0, NUM_COARSE)
    np.testing.assert_array_equal(np.concatenate([coarse, fine], axis=1), codes)
    # Fine ids never collide with coarse ids: each level has its own range.
    assert example.targets[mask].min() >= VOCAB.acoustic_range(NUM_COARSE)[0]
    ranges = layouts.acoustic_target_ranges(VOCAB, NUM_COARSE, 4, 3, first_level=3)
    np.testing.assert_array_equal(ranges[:, 0], [VOCAB.acoustic_range(q)[0] for q in (3, 2, 3)])


def test_acoustic_only_example_by_hand():
    # Acoustic offset 3 + 10 = 13; level q code c -> 13 + 8q + c. Two frames, Q' = 2 of 4 levels.
    codes = np.array([[1, 2, 7, 7], [0, 5, 7, 7]])
    sequence, prefix = layouts.acoustic_sequence(codes, VOCAB, NUM_COARSE)
    assert prefix == 0 and sequence.tolist() == [14, 23, 13, 26]
    example = layouts.acoustic_example(codes, VOCAB, NUM_COARSE)
    assert example.targets.tolist() == [14, 23, 13, 26]
    assert example.inputs.tolist() == [BOS, 14, 23, 13]
    assert example.loss_mask.tolist() == [1, 1, 1, 1]
    # The coarse stage's predicted part, token for token, with no semantic prefix or SEP.
    coarse = layouts.coarse_example(np.array([3, 3]), codes, VOCAB, NUM_COARSE)
    np.testing.assert_array_equal(coarse.targets[coarse.loss_mask == 1], example.targets)
    np.testing.assert_array_equal(layouts.codes_from_tokens(example.targets, VOCAB, 0, NUM_COARSE),
                                  codes[:, :NUM_COARSE])


def test_pad_example_and_prompt():
    example = layouts.semantic_example(np.array([1, 2, 3]), VOCAB)
    padded = layouts.pad_example(example, 6)
    np.testing.assert_array_equal(padded.targets[3:], [PAD] * 3)
    np.testing.assert_array_equal(padded.loss_mask, [1, 1, 1, 0, 0, 0])
    assert padded.inputs.dtype == np.int32 and padded.loss_mask.dtype == np.float32
    with pytest.raises(ValueError, match="exceeds the model length 2"):
        layouts.pad_example(example, 2)
    sequence, prefix = layouts.coarse_sequence(np.array([1, 2]), _codes(2), VOCAB, NUM_COARSE)
    prompt = layouts.prompt_tokens(sequence[:prefix])
    np.testing.assert_array_equal(prompt, np.r_[BOS, np.array([1, 2]) + VOCAB.semantic_offset, SEP])


def test_out_of_range_ids_are_reported():
    with pytest.raises(ValueError, match="semantic id 10"):
        layouts.semantic_example(np.array([1, 10]), VOCAB)
    with pytest.raises(ValueError, match="not a semantic token"):
        layouts.semantic_ids_from_tokens(np.array([SEP]), VOCAB)


def test_layouts_import_numpy_only():
    """Input pipelines (tf.data workers, grain) import the layouts without JAX or Flax."""
    import subprocess
    import sys
    code = "import sys, audiolm_jax.lm.layouts; print('jax' in sys.modules or 'flax' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
