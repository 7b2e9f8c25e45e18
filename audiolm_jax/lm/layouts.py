"""Token layouts of the three AudioLM stages (paper sec. III-C), pure numpy.

One vocabulary serves every stage (`AudioVocabulary`):

    id range                              meaning
    0                                     PAD (padding; never a target)
    1                                     BOS (first model input of every sequence)
    2                                     SEP (between conditioning and predicted part)
    [3, 3 + K)                            semantic token k      -> 3 + k
    [3 + K + q*N, 3 + K + (q+1)*N)        acoustic level q code c -> 3 + K + q*N + c
                                          (q = 0..Q-1, coarse levels first)

The acoustic part is the paper's row-major flattening with offsets o_i = ((i-1) mod Q) * N for
the i-th flat token (1-based) when all Q levels are flattened; with levels q_start..q_end-1
only, each token keeps the offset of its own level (q*N), so coarse and fine ids never collide.

Stage sequences (before the BOS shift):
    semantic  z_1 .. z_T                                     predicts all of it
    coarse    z_1 .. z_Ts  SEP  y_1^1 .. y_1^Q' y_2^1 ..     predicts the acoustic part
    fine      y^{<=Q'} flattened  SEP  y^{>Q'} flattened      predicts the fine part
    acoustic  y_1^1 .. y_1^Q' y_2^1 ..                       predicts all of it
The last is the paper's baseline without semantic tokens (sec. IV-C/IV-D, IV-I): the coarse
stage's acoustic part alone, no semantic prefix and no SEP; it continues coarse tokens directly.
Stages 1 and 2 remove consecutive repeated semantic tokens (`dedup_consecutive`).
An example is (inputs, targets, loss_mask), each [length]: targets = sequence,
inputs = [BOS] + sequence[:-1], loss_mask = 1 exactly where the target belongs to the
predicted part (so y_1^1 is the first predicted token of stage 2, as in the paper).
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

PAD, BOS, SEP = 0, 1, 2
NUM_SPECIALS = 3


@dataclasses.dataclass(frozen=True)
class AudioVocabulary:
    """Id map shared by the stage models; see the module docstring."""
    semantic_size: int       # K: k-means clusters
    num_quantizers: int      # Q: residual VQ levels
    codebook_size: int       # N: codes per level

    @property
    def semantic_offset(self) -> int:
        return NUM_SPECIALS

    @property
    def acoustic_offset(self) -> int:
        return NUM_SPECIALS + self.semantic_size

    @property
    def size(self) -> int:
        return self.acoustic_offset + self.num_quantizers * self.codebook_size

    def semantic_range(self) -> tuple[int, int]:
        """[low, high) ids of semantic tokens."""
        return self.semantic_offset, self.acoustic_offset

    def acoustic_range(self, level: int) -> tuple[int, int]:
        """[low, high) ids of acoustic level `level` (0-based)."""
        _check_levels(level, level + 1, self.num_quantizers)
        low = self.acoustic_offset + level * self.codebook_size
        return low, low + self.codebook_size


class StageExample(NamedTuple):
    """One training sequence: inputs/targets int32 [length], loss_mask float32 [length]."""
    inputs: np.ndarray
    targets: np.ndarray
    loss_mask: np.ndarray


def _check_levels(q_start: int, q_end: int, num_quantizers: int) -> None:
    if not 0 <= q_start < q_end <= num_quantizers:
        raise ValueError(f"quantizer levels [{q_start}, {q_end}) are not inside [0, {num_quantizers}): "
                         "give 0 <= q_start < q_end <= number of quantizers")


def _check_range(ids: np.ndarray, size: int, what: str) -> None:
    if ids.size and (ids.min() < 0 or ids.max() >= size):
        bad = ids[(ids < 0) | (ids >= size)][0]
        raise ValueError(f"{what} id {int(bad)} is outside [0, {size}); check that the tokenizer "
                         f"and the vocabulary ({what} size {size}) agree")


def dedup_consecutive(ids: np.ndarray) -> np.ndarray:
    """Removes consecutive repetitions: [5, 5, 7, 5, 5, 5] -> [5, 7, 5]. ids: [frames]."""
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"dedup_consecutive expects [frames] ids, got shape {ids.shape}")
    if ids.size == 0:
        return ids
    keep = np.concatenate([[True], ids[1:] != ids[:-1]])
    return ids[keep]


def flatten_acoustic(codes: np.ndarray, codebook_size: int, q_start: int = 0,
                     q_end: int | None = None) -> np.ndarray:
    """Row-major flattening of levels [q_start, q_end) with per-level offsets.

    Args:
      codes: int [frames, quantizers], values in [0, codebook_size).
    Returns:
      int32 [frames * (q_end - q_start)]: codes[t, q] + q * codebook_size, frame by frame.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"flatten_acoustic expects codes [frames, quantizers], got shape {codes.shape}")
    q_end = codes.shape[1] if q_end is None else q_end
    _check_levels(q_start, q_end, codes.shape[1])
    selected = codes[:, q_start:q_end].astype(np.int64)
    _check_range(selected, codebook_size, "acoustic code")
    offsets = np.arange(q_start, q_end) * codebook_size
    return (selected + offsets[None, :]).reshape(-1).astype(np.int32)


def unflatten_acoustic(flat: np.ndarray, codebook_size: int, q_start: int, q_end: int, *,
                       allow_partial: bool = False) -> np.ndarray:
    """Inverse of `flatten_acoustic`: int [frames * levels] -> int32 [frames, q_end - q_start].

    Every token must carry the offset of the level its position implies. A trailing
    incomplete frame is an error unless `allow_partial` (then it is dropped), which suits
    sampled sequences cut at an arbitrary length.
    """
    flat = np.asarray(flat).astype(np.int64).reshape(-1)
    if not 0 <= q_start < q_end:
        raise ValueError(f"levels [{q_start}, {q_end}) are empty; give 0 <= q_start < q_end")
    levels = q_end - q_start
    if flat.size % levels:
        if not allow_partial:
            raise ValueError(f"{flat.size} acoustic tokens are not whole frames of {levels} levels; "
                             "pass allow_partial=True to drop the trailing incomplete frame")
        flat = flat[: flat.size - flat.size % levels]
    grid = flat.reshape(-1, levels) - (np.arange(q_start, q_end) * codebook_size)[None, :]
    if grid.size and (grid.min() < 0 or grid.max() >= codebook_size):
        frame, column = np.argwhere((grid < 0) | (grid >= codebook_size))[0]
        raise ValueError(f"flat token {int(flat[frame * levels + column])} at frame {frame} is not a "
                         f"level-{q_start + column} code (expected [{(q_start + column) * codebook_size}, "
                         f"{(q_start + column + 1) * codebook_size})); the sequence is misaligned")
    return grid.astype(np.int32)


def _example(sequence: np.ndarray, num_prefix: int) -> StageExample:
    sequence = sequence.astype(np.int32)
    inputs = np.concatenate([[BOS], sequence[:-1]]).astype(np.int32)
    loss_mask = (np.arange(sequence.size) >= num_prefix).astype(np.float32)
    return StageExample(inputs, sequence, loss_mask)


def _semantic_tokens(semantic_ids: np.ndarray, vocab: AudioVocabulary, dedup: bool) -> np.ndarray:
    ids = np.asarray(semantic_ids).reshape(-1).astype(np.int64)
    _check_range(ids, vocab.semantic_size, "semantic")
    if dedup:
        ids = dedup_consecutive(ids)
    return ids + vocab.semantic_offset


def _acoustic_tokens(codes: np.ndarray, vocab: AudioVocabulary, q_start: int, q_end: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != vocab.num_quantizers:
        raise ValueError(f"acoustic codes must be [frames, {vocab.num_quantizers}], got shape {codes.shape}")
    return flatten_acoustic(codes, vocab.codebook_size, q_start, q_end).astype(np.int64) + vocab.acoustic_offset


def semantic_sequence(semantic_ids: np.ndarray, vocab: AudioVocabulary, *,
                      dedup: bool = True) -> tuple[np.ndarray, int]:
    """Stage 1: (sequence, prefix length 0). semantic_ids: [frames] in [0, K)."""
    return _semantic_tokens(semantic_ids, vocab, dedup).astype(np.int32), 0


def coarse_sequence(semantic_ids: np.ndarray, codes: np.ndarray, vocab: AudioVocabulary,
                    num_coarse: int, *, dedup: bool = True) -> tuple[np.ndarray, int]:
    """Stage 2: semantic prefix, SEP, coarse levels [0, num_coarse) flattened.

    codes: [frames, Q] (all levels; only the coarse ones are used). Returns (sequence,
    prefix length), the prefix being the semantic tokens and SEP.
    """
    prefix = np.concatenate([_semantic_tokens(semantic_ids, vocab, dedup), [SEP]])
    target = _acoustic_tokens(codes, vocab, 0, num_coarse)
    return np.concatenate([prefix, target]).astype(np.int32), prefix.size


def fine_sequence(codes: np.ndarray, vocab: AudioVocabulary, num_coarse: int) -> tuple[np.ndarray, int]:
    """Stage 3: coarse levels flattened, SEP, fine levels [num_coarse, Q) flattened."""
    prefix = np.concatenate([_acoustic_tokens(codes, vocab, 0, num_coarse), [SEP]])
    target = _acoustic_tokens(codes, vocab, num_coarse, vocab.num_quantizers)
    return np.concatenate([prefix, target]).astype(np.int32), prefix.size


def acoustic_sequence(codes: np.ndarray, vocab: AudioVocabulary,
                      num_coarse: int) -> tuple[np.ndarray, int]:
    """Acoustic-only baseline: coarse levels [0, num_coarse) flattened, prefix length 0.

    codes: [frames, Q] (all levels; only the coarse ones are used). The tokens are exactly the
    predicted part of `coarse_sequence`, so both models share ids and the fine stage.
    """
    return _acoustic_tokens(codes, vocab, 0, num_coarse).astype(np.int32), 0


def semantic_example(semantic_ids, vocab: AudioVocabulary, *, dedup: bool = True) -> StageExample:
    """Stage-1 training example from semantic ids [frames]."""
    return _example(*semantic_sequence(semantic_ids, vocab, dedup=dedup))


def coarse_example(semantic_ids, codes, vocab: AudioVocabulary, num_coarse: int, *,
                   dedup: bool = True) -> StageExample:
    """Stage-2 training example; loss only on the coarse acoustic tokens."""
    return _example(*coarse_sequence(semantic_ids, codes, vocab, num_coarse, dedup=dedup))


def fine_example(codes, vocab: AudioVocabulary, num_coarse: int) -> StageExample:
    """Stage-3 training example; loss only on the fine acoustic tokens."""
    return _example(*fine_sequence(codes, vocab, num_coarse))


def acoustic_example(codes, vocab: AudioVocabulary, num_coarse: int) -> StageExample:
    """Acoustic-only training example; loss on every (coarse acoustic) token."""
    return _example(*acoustic_sequence(codes, vocab, num_coarse))


def pad_example(example: StageExample, length: int) -> StageExample:
    """Right-pads to `length` with PAD and loss_mask 0; longer examples are an error."""
    size = example.targets.size
    if size > length:
        raise ValueError(f"stage sequence of {size} tokens exceeds the model length {length}; crop the "
                         "audio shorter or raise the sequence length")
    pad = lambda a, value: np.pad(a, (0, length - size), constant_values=value).astype(a.dtype)
    return StageExample(pad(example.inputs, PAD), pad(example.targets, PAD), pad(example.loss_mask, 0))


def prompt_tokens(sequence: np.ndarray) -> np.ndarray:
    """Model input for generation after `sequence` (a stage sequence or its prefix): BOS first.

    The logits at the last position then predict the token that follows `sequence`.
    """
    return np.concatenate([[BOS], np.asarray(sequence)]).astype(np.int32)


def acoustic_target_ranges(vocab: AudioVocabulary, q_start: int, q_end: int, num_tokens: int,
                           first_level: int | None = None) -> np.ndarray:
    """[num_tokens, 2] allowed [low, high) ids for the next `num_tokens` acoustic tokens.

    Samplers use it to keep every position on the level that the row-major layout puts
    there; `first_level` is the level of the first of them (default q_start).
    """
    _check_levels(q_start, q_end, vocab.num_quantizers)
    first = q_start if first_level is None else first_level
    levels = q_start + (first - q_start + np.arange(num_tokens)) % (q_end - q_start)
    low = vocab.acoustic_offset + levels * vocab.codebook_size
    return np.stack([low, low + vocab.codebook_size], axis=1).astype(np.int32)


def semantic_ids_from_tokens(tokens: np.ndarray, vocab: AudioVocabulary) -> np.ndarray:
    """Vocabulary ids of generated semantic tokens -> semantic ids [frames] in [0, K)."""
    tokens = np.asarray(tokens).reshape(-1).astype(np.int64)
    low, high = vocab.semantic_range()
    if tokens.size and (tokens.min() < low or tokens.max() >= high):
        bad = tokens[(tokens < low) | (tokens >= high)][0]
        raise ValueError(f"token {int(bad)} is not a semantic token (ids [{low}, {high})); strip "
                         "BOS/SEP and the acoustic part before decoding")
    return (tokens - low).astype(np.int32)


def codes_from_tokens(tokens: np.ndarray, vocab: AudioVocabulary, q_start: int, q_end: int, *,
                      allow_partial: bool = False) -> np.ndarray:
    """Vocabulary ids of a flattened acoustic part -> codes [frames, q_end - q_start]."""
    tokens = np.asarray(tokens).reshape(-1).astype(np.int64)
    _check_levels(q_start, q_end, vocab.num_quantizers)
    return unflatten_acoustic(tokens - vocab.acoustic_offset, vocab.codebook_size, q_start, q_end,
                              allow_partial=allow_partial)
