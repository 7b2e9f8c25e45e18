"""Triphone ABX (eval/abx.py): known answers, libri-light's DTW and cosine cases, a brute-force
reference of its triplets and averaging, perfect features at 0 and random features near 0.5."""
import math
from collections import defaultdict

import numpy as np
import pytest

from audiolm_jax.eval import abx
from audiolm_jax.eval.abx import AbxItem, abx_error, dtw_distance, frame_distances, frame_span


def test_frame_span_aligns_25_and_50_hz():
    # Frames centred at (i + 0.5) / rate inside [onset, offset) (libri-light's rounding).
    assert frame_span(0.10, 0.30, 50, 1000) == (5, 14)
    assert frame_span(0.10, 0.30, 25, 1000) == (2, 7)
    assert frame_span(0.0, 0.02, 25, 1000) == (0, 0)  # shorter than a 25 Hz frame: empty
    assert frame_span(0.9, 2.0, 25, 30) == (22, 30)  # clipped to the sequence


def test_triphone_items_skip_silence_and_cut_the_triphone():
    phones = [["pau", 0.0, 0.2], ["f", 0.2, 0.3], ["ao", 0.3, 0.4], ["r", 0.4, 0.5],
              ["pau", 0.5, 0.7]]
    items = abx.triphone_items("u1", "s1", phones)
    assert items == [AbxItem("u1", 0.2, 0.5, "ao", "f+r", "s1")]
    assert abx.triphone_items("u1", "s1", phones, extent="phone")[0].onset == 0.3


def test_dtw_matches_libri_light_known_answers():
    # libri-light eval/ABX_src/unit_tests.py, testDTWFunction (euclidean frame distance).
    xs = [np.array([[0, 1], [0, 0], [1, 1]], float), np.array([[0, 2], [0, 1], [1, 1], [-1, 0]], float),
          np.array([[0, 0], [0, 1]], float)]
    y = np.array([[0, 1], [1, 2], [0, 0]], float)
    expected = [math.sqrt(2) / 2, 3 / 4, (2 + math.sqrt(2)) / 3]
    for x, want in zip(xs, expected):
        assert dtw_distance(x, y, "euclidean") == pytest.approx(want, abs=1e-6)
    # The batched path over padded pairs gives the same.
    got = abx.pair_distances(xs + [y], np.array([[0, 3], [1, 3], [2, 3]]), "euclidean")
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_angular_distance_matches_libri_light_known_answers():
    # libri-light unit_tests.py, testCosineNormalized (zero vectors included).
    x = np.array([[1., 0., 0., 0.], [0., 0., 0., 0.]])
    y = np.array([[-0.5, -0.5, -0.5, 0.5], [0., 0., 0., 0.], [0., 1., 0., 0.]])
    np.testing.assert_allclose(frame_distances(x, y), [[2 / 3, 1, 0.5], [1, 0, 1]], atol=1e-4)
    x2 = np.array([[0., 0., -1., 0.], [0.5, -0.5, 0.5, -0.5]])
    np.testing.assert_allclose(frame_distances(x2, y), [[1 / 3, 1, 0.5], [2 / 3, 1, 2 / 3]],
                               atol=1e-4)


def _one_frame_items(spec):
    """spec: [(name, phone, context, speaker, vector)] -> items, features (one frame each)."""
    items, feats = [], {}
    for name, phone, context, speaker, vec in spec:
        items.append(AbxItem(name, 0.0, 0.2, phone, context, speaker))  # 1 frame at 10 Hz
        feats[name] = np.asarray([vec], np.float32)
    return items, feats


def test_hand_computed_within_and_across():
    # One context. Speaker s1: a-tokens A1, A2 and one b-token B1; speaker s2: a-token X1.
    spec = [("A1", "a", "l+r", "s1", [1, 0]), ("A2", "a", "l+r", "s1", [0, 1]),
            ("B1", "b", "l+r", "s1", [1, -0.2]), ("X1", "a", "l+r", "s2", [1, -0.3])]
    items, feats = _one_frame_items(spec)
    result = abx_error(items, feats, 10.0)
    # Within (s1, A=a, B=b): X=A1 vs A=A2 -> d=.5 > d(A1,B1)=.06: error; X=A2: d(A2,A1)=.5 <
    # d(A2,B1)=.56: right. (b has one token: no within group with A=b.) -> 0.5
    assert result.within == pytest.approx(0.5)
    # Across (A, B from s1, X=X1 from s2): A=a: X1 vs A1 (.09), A2 (.59) and B1 (.02): A1 is
    # farther than B1 -> 1, A2 -> 1; A=b has no X of phone b in s2. -> 1.0
    assert result.across == pytest.approx(1.0)
    assert (result.within_groups, result.across_groups, result.items) == (1, 1, 4)


def test_hand_computed_ties_count_half():
    spec = [("A1", "a", "c", "s1", [1, 0]), ("A2", "a", "c", "s1", [0, 1]),
            ("B1", "b", "c", "s1", [-1, 0])]  # d(A1, A2) = d(A2, B1) = .5 for X = A2
    items, feats = _one_frame_items(spec)
    # X=A1: d(A1,A2)=.5 < d(A1,B1)=1 right; X=A2: .5 == .5 tie -> 0.25
    assert abx_error(items, feats, 10.0).within == pytest.approx(0.25)


def test_averaging_is_context_then_speaker_then_phone_pair():
    scores = {("c1", "s1", "a", "b"): 1.0, ("c2", "s1", "a", "b"): 0.0,
              ("c1", "s2", "a", "b"): 0.0, ("c1", "s1", "b", "a"): 1.0}
    # (s1,a,b): .5, (s2,a,b): 0, (s1,b,a): 1 -> (a,b): .25, (b,a): 1 -> .625 (flat mean: .5)
    assert abx._mean_nested(scores, [[0], [1]]) == pytest.approx(0.625)


# --- a toy corpus, and an independent brute-force reference of libri-light's ABX ------------

PHONES, CONTEXTS, SPEAKERS = ["a", "e", "i"], ["p+t", "k+s"], ["s1", "s2", "s3"]


def _toy_corpus(rng, feature_fn, frame_rate=50.0):
    """Items (triphone extent) over utterances of varying phone durations; feature_fn(phone
    labels per frame, speaker) -> [frames, dim]."""
    items, feats = [], {}
    for s in SPEAKERS:
        for u in range(6):
            name = f"{s}-{u}"
            labels, timings, t = [], [], 0.0
            seq = []
            for _ in range(4):
                left, right = rng.choice(CONTEXTS).split("+")
                seq += [left, str(rng.choice(PHONES)), right]
            for phone in seq:
                dur = int(rng.integers(2, 5)) / frame_rate
                timings.append([phone, t, t + dur])
                labels += [phone] * int(round(dur * frame_rate))
                t += dur
            items += abx.triphone_items(name, s, timings)
            feats[name] = feature_fn(labels, s)
    return items, feats


def _reference_dtw(d):
    """libri-light's dtw.pyx, written out in plain Python."""
    n, m = d.shape
    c = np.zeros((n, m))
    c[0, 0] = d[0, 0]
    for i in range(1, n):
        c[i, 0] = d[i, 0] + c[i - 1, 0]
    for j in range(1, m):
        c[0, j] = d[0, j] + c[0, j - 1]
    for i in range(1, n):
        for j in range(1, m):
            c[i, j] = d[i, j] + min(c[i - 1, j], c[i - 1, j - 1], c[i, j - 1])
    i, j, length = n - 1, m - 1, 1
    while i > 0 and j > 0:
        up, left, diag = c[i - 1, j], c[i, j - 1], c[i - 1, j - 1]
        if diag <= left and diag <= up:
            i, j = i - 1, j - 1
        elif left <= up:
            j -= 1
        else:
            i -= 1
        length += 1
    return c[n - 1, m - 1] / (length + i + j)


def _reference_abx(items, feats, rate):
    """Every triplet, group errors, and eval_ABX.py's dense reductions (sum / count > 0)."""
    segs = {}
    for k, it in enumerate(items):
        s, e = frame_span(it.onset, it.offset, rate, len(feats[it.utterance]))
        if e > s:
            segs[k] = feats[it.utterance][s:e]

    def dist(p, q):
        return _reference_dtw(frame_distances(segs[p], segs[q]))

    cells = defaultdict(list)
    for k in segs:
        cells[(items[k].context, items[k].phone, items[k].speaker)].append(k)
    ctx = sorted({c for c, _, _ in cells}); ph = sorted({p for _, p, _ in cells})
    spk = sorted({s for _, _, s in cells})
    C, P, S = len(ctx), len(ph), len(spk)
    within = np.zeros((S, P, P, C)); within_n = np.zeros_like(within)
    across = np.zeros((S, P, P, C, S)); across_n = np.zeros_like(across)
    for (c, a, s), ka in cells.items():
        for b in ph:
            kb = cells.get((c, b, s))
            if b == a or not kb:
                continue
            idx = (spk.index(s), ph.index(a), ph.index(b), ctx.index(c))
            if len(ka) > 1:
                errs = [(dist(x, ai) > dist(x, bi)) + 0.5 * (dist(x, ai) == dist(x, bi))
                        for x in ka for ai in ka if ai != x for bi in kb]
                within[idx], within_n[idx] = np.mean(errs), 1
            for sx in spk:
                kx = cells.get((c, a, sx))
                if sx == s or not kx:
                    continue
                errs = [(dist(x, ai) > dist(x, bi)) + 0.5 * (dist(x, ai) == dist(x, bi))
                        for x in kx for ai in ka for bi in kb]
                across[idx + (spk.index(sx),)], across_n[idx + (spk.index(sx),)] = np.mean(errs), 1

    def reduce(conf, count, dims):
        div_c = count.sum(axis=dims)
        g = conf.sum(axis=dims) / (div_c + 1e-8 * (div_c == 0))
        div_s = (div_c > 0).sum(axis=0)
        p = g.sum(axis=0) / (div_s + 1e-8 * (div_s == 0))
        return p.sum() / (div_s > 0).sum()

    return reduce(within, within_n, (3,)), reduce(across, across_n, (3, 4))


def test_matches_brute_force_reference_of_libri_light():
    rng = np.random.default_rng(0)
    centres = {p: rng.standard_normal(6) for p in PHONES + ["p", "t", "k", "s"]}
    shift = {s: rng.standard_normal(6) for s in SPEAKERS}

    def noisy(labels, speaker):  # phone identity + speaker shift + a lot of noise
        return np.stack([centres[p] + 1.5 * shift[speaker] + 1.2 * rng.standard_normal(6)
                         for p in labels]).astype(np.float32)

    items, feats = _toy_corpus(rng, noisy)
    want_within, want_across = _reference_abx(items, feats, 50.0)
    got = abx_error(items, feats, 50.0, max_group_size=None, max_x_speakers=None)
    assert got.within_groups > 10 and got.across_groups > 10
    assert 0.02 < want_within < 0.6 and 0.02 < want_across < 0.6  # a non-trivial case
    assert got.within == pytest.approx(want_within, abs=1e-9)
    assert got.across == pytest.approx(want_across, abs=1e-9)


@pytest.mark.parametrize("rate", [25.0, 50.0])
def test_perfect_features_give_zero_and_random_features_half(rate):
    rng = np.random.default_rng(1)
    vocab = sorted(set(PHONES + ["p", "t", "k", "s"]))

    def one_hot(labels, speaker):
        return np.eye(len(vocab), dtype=np.float32)[[vocab.index(p) for p in labels]]

    items, feats = _toy_corpus(rng, one_hot, frame_rate=rate)
    perfect = abx_error(items, feats, rate)
    assert perfect.within == 0.0 and perfect.across == 0.0
    noise = {k: rng.standard_normal((len(v), 16)).astype(np.float32) for k, v in feats.items()}
    random = abx_error(items, noise, rate)
    assert abs(random.within - 0.5) < 0.12 and abs(random.across - 0.5) < 0.12


def test_group_cap_is_seeded_and_bad_arguments_fail():
    rng = np.random.default_rng(2)
    items, feats = _toy_corpus(rng, lambda labels, s: rng.standard_normal((len(labels), 4)))
    r1 = abx_error(items, feats, 50.0, max_group_size=2, seed=3)
    assert r1 == abx_error(items, feats, 50.0, max_group_size=2, seed=3)
    with pytest.raises(ValueError, match="distance"):
        abx_error(items, feats, 50.0, distance="cosine-ish")
    with pytest.raises(ValueError, match="conditions"):
        abx_error(items, feats, 50.0, conditions=("sideways",))
