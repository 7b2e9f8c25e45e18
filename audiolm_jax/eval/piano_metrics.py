"""Piano continuation coherence (AudioLM sec. IV-I analogue): objective stand-ins for the
listeners' preference, computed with librosa, comparing each continuation with its prompt.

`continuation_metrics(prompt, continuation)` returns scores where higher means "more like the
prompt" (all in [0, 1] except where noted):
  chroma_similarity  cosine of the mean CQT chroma vectors (same pitch classes in use);
  key_agreement      1 if the Krumhansl-Schmuckler key estimated on each part is the same;
  key_correlation    the continuation's chroma correlated with the prompt key's profile, [-1, 1];
  rhythm_consistency 1 - |log(onset rate ratio)| / log(4), clipped at 0 (same note density);
  ioi_similarity     histogram intersection of inter-onset intervals (log-spaced bins);
  range_overlap      overlap (IoU) of the active pitch ranges (CQT bins above -40 dB of peak).
`pairwise_win(a, b)` then decides, per prompt, which system's continuation agrees with the prompt
on more metrics (ties 0.5), and returns A's win fraction with a Wilson 95% CI: the analogue of the
paper's AudioLM-vs-acoustic-only preference test.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from audiolm_jax.eval.stats import bootstrap_ratio_ci, wilson_interval

SAMPLE_RATE = 16000
METRICS = ("chroma_similarity", "key_agreement", "key_correlation", "rhythm_consistency",
           "ioi_similarity", "range_overlap")
_HOP = 512
_CQT_BINS = 84  # C1 .. B7
_FMIN_MIDI = 24
# Krumhansl-Kessler key profiles (C major / C minor), the standard for key finding.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def _check(wav: np.ndarray, name: str) -> np.ndarray:
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1 or wav.size < _HOP * 4:
        raise ValueError(f"piano_metrics: the {name} must be mono audio of at least "
                         f"{_HOP * 4} samples, got shape {wav.shape}")
    return wav


def _cqt_db(wav: np.ndarray, sr: int) -> np.ndarray:
    import librosa  # noqa: PLC0415

    cqt = np.abs(librosa.cqt(wav, sr=sr, hop_length=_HOP, n_bins=_CQT_BINS,
                             fmin=librosa.midi_to_hz(_FMIN_MIDI)))
    return librosa.amplitude_to_db(cqt, ref=np.max(cqt) if cqt.max() > 0 else 1.0)


def mean_chroma(wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Mean CQT chroma `[12]` (C first), normalised to sum 1 (zeros for silence)."""
    import librosa  # noqa: PLC0415

    chroma = librosa.feature.chroma_cqt(y=wav, sr=sr, hop_length=_HOP).mean(axis=1)
    total = chroma.sum()
    return chroma / total if total > 0 else chroma


def key_profiles() -> np.ndarray:
    """`[24, 12]`: 12 major then 12 minor Krumhansl-Kessler profiles, rotated to each tonic."""
    return np.stack([np.roll(_MAJOR, k) for k in range(12)] + [np.roll(_MINOR, k) for k in range(12)])


def estimate_key(chroma: np.ndarray) -> tuple[int, np.ndarray]:
    """(key index: 0-11 major C..B, 12-23 minor, correlations `[24]`) of a chroma vector."""
    corr = np.array([_corr(chroma, p) for p in key_profiles()])
    return int(np.argmax(corr)), corr


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den > 0 else 0.0


def onset_times(wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    import librosa  # noqa: PLC0415

    return librosa.onset.onset_detect(y=wav, sr=sr, hop_length=_HOP, units="time")


def _ioi_histogram(onsets: np.ndarray) -> np.ndarray:
    edges = np.geomspace(0.05, 2.0, 13)
    ioi = np.diff(onsets)
    hist, _ = np.histogram(np.clip(ioi, edges[0], edges[-1] - 1e-6), bins=edges)
    return hist / hist.sum() if hist.sum() > 0 else hist.astype(np.float64)


def pitch_range(wav: np.ndarray, sr: int = SAMPLE_RATE, threshold_db: float = -40.0
                ) -> tuple[int, int] | None:
    """(lowest, highest) MIDI pitch whose CQT bin exceeds `threshold_db` (re. the peak) in at
    least 1% of frames; None for silence."""
    active = (_cqt_db(wav, sr) > threshold_db).mean(axis=1) >= 0.01
    if not active.any():
        return None
    bins = np.flatnonzero(active)
    return _FMIN_MIDI + int(bins[0]), _FMIN_MIDI + int(bins[-1])


def _range_iou(a: tuple[int, int] | None, b: tuple[int, int] | None) -> float:
    if a is None or b is None:
        return 0.0
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)
    union = max(a[1], b[1]) - min(a[0], b[0]) + 1
    return inter / union


def continuation_metrics(prompt: np.ndarray, continuation: np.ndarray,
                         sr: int = SAMPLE_RATE) -> dict[str, float]:
    """The agreement of `continuation` with `prompt` (both mono float audio at `sr`)."""
    prompt, continuation = _check(prompt, "prompt"), _check(continuation, "continuation")
    cp, cc = mean_chroma(prompt, sr), mean_chroma(continuation, sr)
    kp, _ = estimate_key(cp)
    kc, corr_c = estimate_key(cc)
    den = np.linalg.norm(cp) * np.linalg.norm(cc)
    op, oc = onset_times(prompt, sr), onset_times(continuation, sr)
    rate_p = len(op) / (len(prompt) / sr)
    rate_c = len(oc) / (len(continuation) / sr)
    if rate_p > 0 and rate_c > 0:
        rhythm = max(0.0, 1.0 - abs(np.log(rate_c / rate_p)) / np.log(4.0))
    else:
        rhythm = 1.0 if rate_p == rate_c else 0.0
    hp, hc = _ioi_histogram(op), _ioi_histogram(oc)
    return {
        "chroma_similarity": float(cp @ cc / den) if den > 0 else 0.0,
        "key_agreement": float(kp == kc),
        "key_correlation": float(corr_c[kp]),
        "rhythm_consistency": float(rhythm),
        "ioi_similarity": float(np.minimum(hp, hc).sum()),
        "range_overlap": _range_iou(pitch_range(prompt, sr), pitch_range(continuation, sr)),
    }


def pair_outcome(a: Mapping[str, float], b: Mapping[str, float],
                 metrics: Sequence[str] = METRICS) -> float:
    """1 if A agrees with the prompt on more metrics than B, 0 if fewer, 0.5 if as many."""
    wins = sum(float(a[m] > b[m]) - float(a[m] < b[m]) for m in metrics)
    return 1.0 if wins > 0 else 0.0 if wins < 0 else 0.5


def pairwise_win(a_metrics: Sequence[Mapping[str, float]], b_metrics: Sequence[Mapping[str, float]],
                 metrics: Sequence[str] = METRICS, groups: Sequence[str] | None = None) -> dict:
    """A's win fraction over B on paired items (same prompts, same order), ties counted half,
    with a Wilson 95% CI; also each metric's mean for A and B. `groups` (one label per item,
    e.g. its prompt): several samples of one prompt are not independent, so the win rate also
    gets a bootstrap CI that resamples whole groups (`ci95_by_group`, `groups`)."""
    if len(a_metrics) != len(b_metrics):
        raise ValueError(f"pairwise_win: {len(a_metrics)} items for A but {len(b_metrics)} for B; "
                         "pass the metrics of both systems for the same prompts, in order")
    outcomes = [pair_outcome(a, b, metrics) for a, b in zip(a_metrics, b_metrics)]
    n, wins = len(outcomes), float(sum(outcomes))
    clustered = {}
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"pairwise_win: {len(groups)} group labels for {n} items")
        labels = sorted(set(groups))
        per_group = [[o for o, g in zip(outcomes, groups) if g == label] for label in labels]
        clustered = {"groups": len(labels), "ci95_by_group": list(bootstrap_ratio_ci(
            [sum(x) for x in per_group], [len(x) for x in per_group]))}
    return {"win_rate": wins / n if n else float("nan"), "ci95": list(wilson_interval(wins, n)),
            "n": n, "wins": wins, **clustered,
            "means_a": {m: float(np.mean([x[m] for x in a_metrics])) if n else float("nan")
                        for m in metrics},
            "means_b": {m: float(np.mean([x[m] for x in b_metrics])) if n else float("nan")
                        for m in metrics}}
