"""ZeroSpeech-style triphone ABX error of frame features (the AudioLM paper's Table I / Figure 3).

An item is a triphone: a centre phone with its left and right neighbours (the context), said by
one speaker, cut out of an utterance. A triplet (A, B, X) has A and X with the same triphone and
B with the same context but another centre phone; it is an error when X is nearer to B than to A
(half an error on a tie):

    within speaker:  A, B, X one speaker, X another token than A
    across speaker:  A, B one speaker, X the same triphone from another speaker

The rules follow libri-light's ABX (github.com/facebookresearch/libri-light/eval, which
zerospeech-libriabx2 reworks), the ZeroSpeech 2021 metric:
- frames: feature frame i of a `frame_rate` Hz sequence is centred at (i + 0.5) / rate; an item
  takes frames ceil(rate * onset - 0.5) <= i < floor(rate * offset - 0.5) and is dropped when
  that is empty (so 25 Hz and 50 Hz features are cut from the same timings);
- distance of two items: DTW over the frame-distance matrix (steps right, down, diagonal), the
  path cost divided by the path length; frame distance `angular` = arccos(cosine) / pi in
  [0, 1] (a zero vector is at 0 from another zero vector and at 1 from anything else),
  `euclidean`, or `mismatch` for integer codes `[frames, levels]`: the fraction of levels whose
  ids differ (a one-hot 0/1 distance, averaged over RVQ levels);
- groups: tokens of one (context, phone, speaker) cell, at most `max_group_size` of them (a
  seeded sample drawn once per cell; libri-light redraws at each use); across speakers at most
  `max_x_speakers` X speakers per A cell. A group's error is the mean over its triplets;
- averaging: within, over contexts, then speakers, then (A phone, B phone) pairs; across, over
  (context, X speaker), then the A/B speaker, then phone pairs -- the reduction of
  libri-light's eval_ABX.py.
One deviation: DTW cost is symmetric, so each unordered item pair is aligned once; the path-length
normaliser can differ from libri-light's only where its backtrack meets an exact tie.

Discrete tokens (see eval/abx_features.py) are scored either through their embeddings (k-means
centroids, summed RVQ codebook vectors) with the angular distance, or as ids with `mismatch`.
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np

# Labels of silence in flite/festival (pau), TIMIT (h#), Kaldi/MFA (sil, sp, spn) alignments.
SILENCES = frozenset({"pau", "sil", "sp", "spn", "h#", "SIL", ""})
DISTANCES = ("angular", "euclidean", "mismatch")
# The nested averaging of group errors (`_mean_nested` levels: key positions averaged at each
# stage). within keys (context, speaker, A phone, B phone): context, then speaker, then phone
# pairs; across keys (context, X speaker, A/B speaker, A phone, B phone): (context, X speaker),
# then the A/B speaker, then phone pairs.
LEVELS = {"within": [[0], [1]], "across": [[0, 1], [2]]}
# DTW chunks hold at most this many floats of padded frames (pairs x frames x dim), ~128 MB.
_CHUNK_FLOATS = 1 << 25


@dataclasses.dataclass(frozen=True)
class AbxItem:
    """One triphone token: `utterance` names its feature sequence; times in seconds."""

    utterance: str
    onset: float
    offset: float
    phone: str
    context: str  # "left+right"
    speaker: str


def triphone_items(utterance: str, speaker: str, phones: Sequence[Sequence],
                   extent: str = "triphone", skip: frozenset[str] = SILENCES) -> list[AbxItem]:
    """Items of one utterance from its phone timings `[(phone, start_s, end_s), ...]`.

    extent: "triphone" cuts the whole triphone (ZeroSpeech 2017/2021 item files), "phone" only
    the centre phone. Triphones touching a label in `skip` (silence) are left out: a pause has no
    phonetic identity and its length would dominate the item.
    """
    if extent not in ("triphone", "phone"):
        raise ValueError(f"extent={extent!r}: use 'triphone' or 'phone'")
    items = []
    for i in range(1, len(phones) - 1):
        (left, l_start, _), (phone, start, end), (right, _, r_end) = phones[i - 1:i + 2]
        if left in skip or phone in skip or right in skip:
            continue
        onset, offset = (float(l_start), float(r_end)) if extent == "triphone" else (start, end)
        items.append(AbxItem(utterance, float(onset), float(offset), str(phone),
                             f"{left}+{right}", str(speaker)))
    return items


def frame_span(onset: float, offset: float, frame_rate: float, num_frames: int) -> tuple[int, int]:
    """[start, end) of the frames of an item (libri-light's rule, frames centred at (i+.5)/rate)."""
    start = max(0, int(math.ceil(frame_rate * onset - 0.5)))
    end = min(num_frames, int(math.floor(frame_rate * offset - 0.5)))
    return start, end


# --- distances ---------------------------------------------------------------------------------

def _unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows scaled to unit norm, float mask of zero rows) of `[..., dim]`."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    zero = norm[..., 0] == 0
    return x / np.where(norm == 0, 1.0, norm), zero.astype(x.dtype)


def frame_distances(x: np.ndarray, y: np.ndarray, distance: str = "angular") -> np.ndarray:
    """Frame-distance matrices `[..., n, dim], [..., m, dim] -> [..., n, m]`."""
    if distance == "mismatch":  # integer codes [..., levels]: the fraction of levels that differ
        x, y = np.asarray(x), np.asarray(y)
        return np.mean(x[..., :, None, :] != y[..., None, :, :], axis=-1).astype(np.float32)
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
    if distance == "euclidean":
        diff = x[..., :, None, :] - y[..., None, :, :]
        return np.sqrt(np.sum(diff * diff, axis=-1))
    if distance != "angular":
        raise ValueError(f"distance={distance!r}: choose one of {DISTANCES}")
    (xu, xz), (yu, yz) = _unit_rows(x), _unit_rows(y)
    cos = np.clip(np.einsum("...nd,...md->...nm", xu, yu), -1.0, 1.0)
    d = np.arccos(cos) / np.pi
    # Zero vectors: 0 from each other, 1 from the rest (libri-light's normalize_with_singularity).
    one_zero = np.maximum(xz[..., :, None], yz[..., None, :])
    both_zero = xz[..., :, None] * yz[..., None, :]
    return np.where(both_zero > 0, 0.0, np.where(one_zero > 0, 1.0, d)).astype(np.float32)


def dtw_batch(dist: np.ndarray, n: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Path-length-normalised DTW costs of padded frame-distance matrices.

    dist float `[pairs, N, M]` (entries past each pair's `n` rows, `m` columns are ignored);
    n, m int `[pairs]` >= 1. Steps (i-1, j), (i, j-1), (i-1, j-1); the path length comes from the
    backtrack preferring diagonal, then left, then up (libri-light's dtw.pyx).
    """
    pairs, rows, cols = dist.shape
    cost = np.empty_like(dist, dtype=np.float64)
    cost[:, 0, 0] = dist[:, 0, 0]
    for i in range(1, rows):
        cost[:, i, 0] = dist[:, i, 0] + cost[:, i - 1, 0]
    for j in range(1, cols):
        cost[:, 0, j] = dist[:, 0, j] + cost[:, 0, j - 1]
    for i in range(1, rows):
        up, diag = cost[:, i - 1, 1:], cost[:, i - 1, :-1]
        best_above = np.minimum(up, diag)  # the left neighbour is sequential, the rest is not
        for j in range(1, cols):
            cost[:, i, j] = dist[:, i, j] + np.minimum(best_above[:, j - 1], cost[:, i, j - 1])
    idx = np.arange(pairs)
    i, j = np.asarray(n) - 1, np.asarray(m) - 1
    final = cost[idx, i, j]
    length = np.ones(pairs, np.int64)
    active = (i > 0) & (j > 0)
    while active.any():
        a = np.nonzero(active)[0]
        ia, ja = i[a], j[a]
        c_up, c_left, c_diag = cost[a, ia - 1, ja], cost[a, ia, ja - 1], cost[a, ia - 1, ja - 1]
        go_diag = (c_diag <= c_left) & (c_diag <= c_up)
        go_left = ~go_diag & (c_left <= c_up)
        i[a] = ia - (~go_left).astype(ia.dtype)
        j[a] = ja - (go_diag | go_left).astype(ja.dtype)
        length[a] += 1
        active = (i > 0) & (j > 0)
    length += i + j  # along the first row or column to (0, 0)
    return (final / length).astype(np.float64)


def dtw_distance(x: np.ndarray, y: np.ndarray, distance: str = "angular") -> float:
    """DTW distance of two items' frames `[n, dim]`, `[m, dim]` (see module docstring)."""
    d = frame_distances(x, y, distance)[None]
    return float(dtw_batch(d, np.array([len(x)]), np.array([len(y)]))[0])


def pair_distances(segments: Sequence[np.ndarray], pairs: np.ndarray,
                   distance: str = "angular") -> np.ndarray:
    """DTW distances of item pairs: segments[i] `[frames_i, dim]`, pairs int `[P, 2]` -> `[P]`.

    Pairs are sorted by length and padded in chunks, so DTW runs vectorised over pairs.
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    out = np.empty(len(pairs), np.float64)
    if not len(pairs):
        return out
    lengths = np.array([len(s) for s in segments])
    dim = segments[0].shape[-1]
    n, m = lengths[pairs[:, 0]], lengths[pairs[:, 1]]
    order = np.lexsort((m, n))
    start = 0
    while start < len(order):
        longest = max(n[order[start]], m[order[start]])
        size = max(1, _CHUNK_FLOATS // (max(longest, 1) * dim))
        # Sorted by n first: extend the chunk while the padded size stays within the budget.
        stop = min(len(order), start + size)
        chunk = order[start:stop]
        rows, cols = n[chunk].max(), m[chunk].max()
        while len(chunk) > 1 and len(chunk) * max(rows, cols) * dim > _CHUNK_FLOATS:
            chunk = chunk[:len(chunk) // 2]
            rows, cols = n[chunk].max(), m[chunk].max()
        x = np.zeros((len(chunk), rows, dim), segments[0].dtype)
        y = np.zeros((len(chunk), cols, dim), segments[0].dtype)
        for k, p in enumerate(chunk):
            x[k, :n[p]] = segments[pairs[p, 0]]
            y[k, :m[p]] = segments[pairs[p, 1]]
        out[chunk] = dtw_batch(frame_distances(x, y, distance), n[chunk], m[chunk])
        start += len(chunk)
    return out


# --- groups and scores -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AbxResult:
    """ABX error rates in [0, 1] (None when no triplet exists) and what they were computed on."""

    within: float | None
    across: float | None
    items: int  # items with at least one frame
    items_dropped: int  # items with no frame at this frame rate (or no features)
    within_groups: int  # (context, speaker, phone A, phone B) groups scored
    across_groups: int  # (context, A/B speaker, X speaker, phone A, phone B) groups scored
    speakers: int
    phones: int
    contexts: int
    # {"within"|"across": {group key: error}}: what the errors average (abx_bootstrap resamples it)
    scores: Mapping[str, Mapping[tuple, float]] = dataclasses.field(
        default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "scores"}


def item_segments(items: Sequence[AbxItem], features: Mapping[str, np.ndarray], frame_rate: float
                  ) -> tuple[list[AbxItem], list[np.ndarray]]:
    """(kept items, their frames) cut from `features[utterance]` `[frames, dim]`."""
    kept, segments = [], []
    for item in items:
        feats = features.get(item.utterance)
        if feats is None:
            continue
        start, end = frame_span(item.onset, item.offset, frame_rate, len(feats))
        if end > start:
            kept.append(item)
            segments.append(np.asarray(feats[start:end]))
    return kept, segments


def _cells(items: Sequence[AbxItem], max_group_size: int | None, rng: np.random.Generator
           ) -> dict[tuple[str, str, str], np.ndarray]:
    """(context, phone, speaker) -> indices of its items, at most `max_group_size` (sampled)."""
    cells: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for k, item in enumerate(items):
        cells[(item.context, item.phone, item.speaker)].append(k)
    out = {}
    for key in sorted(cells):
        idx = np.array(cells[key])
        if max_group_size is not None and len(idx) > max_group_size:
            idx = np.sort(rng.choice(idx, max_group_size, replace=False))
        out[key] = idx
    return out


def _group_error(d_xa: np.ndarray, d_xb: np.ndarray, same_x_a: bool) -> float:
    """Error of one group: d_xa `[nx, na]`, d_xb `[nx, nb]`; X = A's tokens when `same_x_a`
    (the diagonal X == A is left out)."""
    xa, xb = d_xa[:, :, None], d_xb[:, None, :]
    err = (xa > xb) + 0.5 * (xa == xb)
    if same_x_a:
        keep = ~np.eye(d_xa.shape[0], dtype=bool)
        return float(err[keep].mean())
    return float(err.mean())


def _mean_nested(scores: Mapping[tuple, float], levels: Sequence[Sequence[int]]) -> float | None:
    """Averages `scores` {key tuple: value} stage by stage: stage k averages over the key
    positions `levels[k]` (positions in the original key); the last stage over what is left."""
    if not scores:
        return None
    remaining = list(range(len(next(iter(scores)))))
    current = {key: value for key, value in scores.items()}
    for level in levels:
        keep = [k for k, p in enumerate(remaining) if p not in level]
        grouped: dict[tuple, list[float]] = defaultdict(list)
        for key, value in current.items():
            grouped[tuple(key[k] for k in keep)].append(value)
        current = {key: float(np.mean(values)) for key, values in grouped.items()}
        remaining = [remaining[k] for k in keep]
    return float(np.mean(list(current.values())))


def abx_error(items: Sequence[AbxItem], features: Mapping[str, np.ndarray], frame_rate: float, *,
              distance: str = "angular", max_group_size: int | None = 10,
              max_x_speakers: int | None = 5, seed: int = 0,
              conditions: Sequence[str] = ("within", "across")) -> AbxResult:
    """Triphone ABX error of `features` {utterance: float `[frames, dim]` at `frame_rate` Hz}.

    items: from `triphone_items`; those whose utterance has no features, or no frame, are
    dropped (counted). See the module docstring for triplets, distances and averaging.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance={distance!r}: choose one of {DISTANCES}")
    unknown = set(conditions) - {"within", "across"}
    if unknown:
        raise ValueError(f"conditions {sorted(unknown)}: use 'within' and/or 'across'")
    kept, segments = item_segments(items, features, frame_rate)
    rng = np.random.default_rng(seed)
    cells = _cells(kept, max_group_size, rng)
    by_cs: dict[tuple[str, str], list[str]] = defaultdict(list)  # (context, speaker) -> phones
    speakers_of: dict[tuple[str, str], list[str]] = defaultdict(list)  # (context, phone) -> spk
    for context, phone, speaker in cells:
        by_cs[(context, speaker)].append(phone)
        speakers_of[(context, phone)].append(speaker)

    # Groups as (key, A cell, B cell, X cell); X == A within speakers.
    groups: dict[str, list] = {"within": [], "across": []}
    for (context, speaker), phones in sorted(by_cs.items()):
        if len(phones) < 2:
            continue
        for a in phones:
            cell_a = (context, a, speaker)
            x_speakers = [s for s in speakers_of[(context, a)] if s != speaker]
            if max_x_speakers is not None and len(x_speakers) > max_x_speakers:
                x_speakers = sorted(rng.choice(x_speakers, max_x_speakers, replace=False))
            for b in phones:
                if b == a:
                    continue
                cell_b = (context, b, speaker)
                if len(cells[cell_a]) > 1:
                    groups["within"].append(((context, speaker, a, b), cell_a, cell_b, cell_a))
                for sx in x_speakers:
                    groups["across"].append(((context, sx, speaker, a, b), cell_a, cell_b,
                                             (context, a, sx)))

    # Every unordered item pair that some group needs, aligned once.
    needed: set[tuple[int, int]] = set()
    for condition in conditions:
        for _, ca, cb, cx in groups[condition]:
            for other in (cells[ca], cells[cb]):
                for x in cells[cx]:
                    needed.update((min(x, o), max(x, o)) for o in other if o != x)
    pairs = np.array(sorted(needed), np.int64).reshape(-1, 2)
    dists = pair_distances(segments, pairs, distance)
    lookup = {(int(p), int(q)): d for (p, q), d in zip(pairs, dists)}

    def matrix(xs: np.ndarray, others: np.ndarray) -> np.ndarray:
        return np.array([[0.0 if x == o else lookup[(min(x, o), max(x, o))] for o in others]
                         for x in xs])

    results, all_scores = {}, {}
    for condition in ("within", "across"):
        if condition not in conditions:
            results[condition], results[condition + "_groups"] = None, 0
            continue
        scores = {}
        for key, ca, cb, cx in groups[condition]:
            xs = cells[cx]
            scores[key] = _group_error(matrix(xs, cells[ca]), matrix(xs, cells[cb]),
                                       same_x_a=condition == "within")
        results[condition] = _mean_nested(scores, LEVELS[condition])
        results[condition + "_groups"] = len(scores)
        all_scores[condition] = scores
    return AbxResult(
        within=results["within"], across=results["across"], items=len(kept),
        items_dropped=len(items) - len(kept), within_groups=results["within_groups"],
        across_groups=results["across_groups"], speakers=len({i.speaker for i in kept}),
        phones=len({i.phone for i in kept}), contexts=len({i.context for i in kept}),
        scores=all_scores)
