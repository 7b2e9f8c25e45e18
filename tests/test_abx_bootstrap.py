"""The context bootstrap of ABX errors: replicates follow abx's nested averaging exactly."""
import itertools

import numpy as np
import pytest

from audiolm_jax.eval import abx
from audiolm_jax.eval.abx import AbxResult
from audiolm_jax.eval.abx_bootstrap import context_draws, interval, replicate_errors
from audiolm_jax.eval.semantic_abx import bootstrap_intervals

CONTEXTS = [f"c{i}" for i in range(12)]


def _scores(condition, rng, bias=0.0):
    """Group errors over 12 contexts, 3 speakers, 3 phones (random, some groups missing)."""
    speakers, phones, scores = ["s1", "s2", "s3"], ["a", "e", "i"], {}
    for c, a, b in itertools.product(CONTEXTS, phones, phones):
        if a == b:
            continue
        if condition == "within":
            for s in speakers:
                if rng.random() < 0.8:
                    scores[(c, s, a, b)] = float(np.clip(rng.random() * 0.6 + bias, 0, 1))
        else:
            for sx, s in itertools.permutations(speakers, 2):
                if rng.random() < 0.7:
                    scores[(c, sx, s, a, b)] = float(np.clip(rng.random() * 0.6 + bias, 0, 1))
    return scores


@pytest.mark.parametrize("condition", ["within", "across"])
def test_one_draw_of_each_context_is_the_plain_error(condition):
    scores = _scores(condition, np.random.default_rng(0))
    ones = np.ones((1, len(CONTEXTS)), np.int64)
    got = replicate_errors(scores, abx.LEVELS[condition], ones, CONTEXTS)
    assert got[0] == pytest.approx(abx._mean_nested(scores, abx.LEVELS[condition]), abs=1e-12)


@pytest.mark.parametrize("condition", ["within", "across"])
def test_a_context_drawn_twice_counts_as_two_contexts(condition):
    """Weights mean multiplicity: the same as copying the context's groups under a new name,
    and a context not drawn is as if it were absent."""
    scores = _scores(condition, np.random.default_rng(1))
    draws = np.ones((1, len(CONTEXTS)), np.int64)
    draws[0, 0], draws[0, 1] = 2, 0
    copied = {k: v for k, v in scores.items() if k[0] != "c1"}
    copied.update({("c0#2",) + k[1:]: v for k, v in scores.items() if k[0] == "c0"})
    got = replicate_errors(scores, abx.LEVELS[condition], draws, CONTEXTS)
    assert got[0] == pytest.approx(abx._mean_nested(copied, abx.LEVELS[condition]), abs=1e-12)


def test_draws_are_seeded_and_intervals_are_percentiles():
    draws = context_draws(CONTEXTS, replicates=500, seed=3)
    assert draws.shape == (500, 12) and (draws.sum(axis=1) == 12).all()
    np.testing.assert_array_equal(draws, context_draws(CONTEXTS, replicates=500, seed=3))
    assert not np.array_equal(draws, context_draws(CONTEXTS, replicates=500, seed=4))
    assert interval(np.arange(101.0)) == pytest.approx([2.5, 97.5])
    assert interval(np.array([np.nan])) is None
    with pytest.raises(ValueError, match="replicate"):
        context_draws([], 10)


def _result(within, across):
    return AbxResult(within=abx._mean_nested(within, abx.LEVELS["within"]),
                     across=abx._mean_nested(across, abx.LEVELS["across"]), items=1,
                     items_dropped=0, within_groups=len(within), across_groups=len(across),
                     speakers=3, phones=3, contexts=12,
                     scores={"within": within, "across": across})


def test_paired_differences_see_through_what_the_contexts_share():
    """Two features whose errors differ by a constant 0.01 on every group: separately their
    intervals overlap, paired the difference is exactly 0.01 in every replicate; a feature
    against itself is exactly 0."""
    rng = np.random.default_rng(2)
    within, across = _scores("within", rng, bias=0.1), _scores("across", rng, bias=0.1)
    shifted = {c: {k: v - 0.01 for k, v in s.items()}
               for c, s in (("within", within), ("across", across))}
    results = {"semantic": _result(shifted["within"], shifted["across"]),
               "acoustic_6kbps": _result(within, across), "log_mel": _result(within, across)}
    out = bootstrap_intervals(results, replicates=400, seed=0)
    lo_s, hi_s = out["abx_ci95"]["across"]["semantic"]
    lo_a, hi_a = out["abx_ci95"]["across"]["acoustic_6kbps"]
    assert lo_s < results["semantic"].across < hi_s and lo_s < lo_a < hi_s  # they overlap
    row = out["abx_paired"]["across"]["semantic - acoustic_6kbps"]
    assert row["difference"] == pytest.approx(-0.01)
    assert row["ci95"] == pytest.approx([-0.01, -0.01], abs=1e-9)
    same = bootstrap_intervals({"layer_1": results["log_mel"], "log_mel": results["log_mel"]},
                               replicates=50)
    assert same["abx_paired"]["within"]["layer_1 - log_mel"]["ci95"] == [0.0, 0.0]
    assert set(out["abx_paired"]["within"]) == {"semantic - acoustic_6kbps", "semantic - log_mel"}
    assert out["abx_bootstrap"] == {"replicates": 400, "seed": 0, "unit": "triphone context",
                                    "contexts": 12}


def test_abx_error_keeps_the_group_scores_it_averaged():
    rng = np.random.default_rng(5)
    items, feats = [], {}
    for s in ("s1", "s2"):
        for u in range(4):
            seq = ["p", "a", "t", "p", "e", "t", "k", "a", "s", "k", "e", "s"]
            timings = [[ph, 0.04 * i, 0.04 * (i + 1)] for i, ph in enumerate(seq)]
            items += abx.triphone_items(f"{s}-{u}", s, timings)
            feats[f"{s}-{u}"] = rng.standard_normal((len(seq) * 2, 4)).astype(np.float32)
    result = abx.abx_error(items, feats, 50.0)
    for condition in ("within", "across"):
        scores = result.scores[condition]
        assert len(scores) == getattr(result, f"{condition}_groups") > 0
        assert abx._mean_nested(scores, abx.LEVELS[condition]) == getattr(result, condition)
    assert "scores" not in result.to_dict()
