"""Objective speech-quality metrics for codec evaluation: ViSQOL (speech mode), PESQ-WB, STOI and a
log-mel distance.

Every metric takes a reference and a degraded float `[samples]` signal of the same length at the
same rate (16 kHz for ViSQOL speech mode and PESQ-WB) and returns one float. The wrapped packages
(`visqol-python`, `pesq`, `pystoi`) are imported on first use, so a missing one fails with
`MetricUnavailable` naming the pip package, and a signal a metric cannot score (PESQ on silence,
say) raises `MetricError`; `measure` collects those per metric instead of failing the whole pair.

ViSQOL: the polynomial similarity-to-MOS mapping of ViSQOL v3 speech mode is the default; it is
the mapping of the ViSQOL release the AudioLM paper used. The newer deep-lattice mapping (the C++
default since 2023) needs `visqol-python[lattice]` and scores 1-2 MOS lower; pass `lattice=True`.
"""
from __future__ import annotations

import functools
import multiprocessing
import warnings
from typing import Mapping, Sequence

import numpy as np

from audiolm_jax.codec.spectral import mel_filterbank

SAMPLE_RATE = 16000
METRICS = ("visqol", "pesq", "stoi", "mel_distance")
HIGHER_IS_BETTER = {"visqol": True, "pesq": True, "stoi": True, "mel_distance": False}
_PACKAGES = {"visqol": "visqol-python", "pesq": "pesq", "pystoi": "pystoi"}


class MetricUnavailable(ImportError):
    """The package implementing a metric is not installed."""


class MetricError(ValueError):
    """A metric could not score this pair of signals (e.g. PESQ finds no speech)."""


def _import(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        raise MetricUnavailable(
            f"metric package {module!r} is not importable ({e}); install it with "
            f"`pip install {_PACKAGES[module.split('.')[0]]}`") from e


def check_pair(ref, deg, sample_rate: int, metric: str,
               required_rate: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validates a (reference, degraded) pair: float 1-D, finite, non-empty, equal lengths."""
    ref, deg = np.asarray(ref), np.asarray(deg)
    for name, x in (("reference", ref), ("degraded", deg)):
        if x.ndim != 1:
            raise ValueError(f"{metric}: the {name} signal must be mono `[samples]`, got shape "
                             f"{x.shape}; mix down or index one channel first")
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"{metric}: the {name} signal must be float audio in [-1, 1], got "
                             f"dtype {x.dtype}; convert int16 PCM with x / 32768")
        if x.size == 0:
            raise ValueError(f"{metric}: the {name} signal is empty")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{metric}: the {name} signal contains NaN or Inf samples")
    if ref.shape != deg.shape:
        raise ValueError(f"{metric}: reference has {ref.size} samples but degraded has {deg.size}; "
                         "trim or zero-pad the degraded signal to the reference length first")
    if required_rate is not None and sample_rate != required_rate:
        raise ValueError(f"{metric} needs {required_rate} Hz audio, got sample_rate={sample_rate}; "
                         f"resample both signals (audiolm_jax.audio.resample)")
    return ref.astype(np.float64), deg.astype(np.float64)


# --- ViSQOL -----------------------------------------------------------------------------------

class VisqolSpeech:
    """ViSQOL v3 in speech mode (16 kHz). One instance holds one configured ViSQOL."""

    def __init__(self, lattice: bool = False):
        api = _import("visqol.api").VisqolApi()
        api.create(mode="speech", use_lattice_model=lattice)
        self._api = api
        self.mapper = "lattice" if lattice else "polynomial"

    def __call__(self, ref, deg, sample_rate: int = SAMPLE_RATE) -> float:
        ref, deg = check_pair(ref, deg, sample_rate, "ViSQOL", SAMPLE_RATE)
        if not np.any(deg):
            raise MetricError("ViSQOL: the degraded signal is all zeros; it has no spectrum to "
                              "compare")
        try:
            score = float(self._api.measure_from_arrays(ref, deg, sample_rate).moslqo)
        except (IndexError, ValueError, ZeroDivisionError) as e:  # e.g. no patch fits
            raise MetricError(f"ViSQOL failed on {ref.size / sample_rate:.2f} s of audio "
                              f"({type(e).__name__}: {e}); it needs about 1 s or more of "
                              "non-silent reference") from e
        if not np.isfinite(score):
            raise MetricError(f"ViSQOL returned {score} (signals of {ref.size} samples); the "
                              "reference may be too short or silent")
        return score


@functools.lru_cache(maxsize=2)
def _visqol(lattice: bool) -> VisqolSpeech:
    return VisqolSpeech(lattice)  # memoised: building the API loads the mapping model


def visqol_speech(ref, deg, sample_rate: int = SAMPLE_RATE, lattice: bool = False) -> float:
    """ViSQOL MOS-LQO in speech mode, 1 (bad) .. 5 (identical)."""
    return _visqol(lattice)(ref, deg, sample_rate)


# --- PESQ, STOI -------------------------------------------------------------------------------

def _pesq_score(sample_rate: int, ref: np.ndarray, deg: np.ndarray
                ) -> tuple[float | None, str | None]:
    """(score, None) or (None, error)."""
    import pesq  # noqa: PLC0415

    try:
        return float(pesq.pesq(sample_rate, ref, deg, "wb")), None
    except (pesq.PesqError, ValueError) as e:  # ValueError: NaN inside PESQ on silent input
        return None, f"{type(e).__name__}: {e}"


def _pesq_child(connection, sample_rate: int, ref: np.ndarray, deg: np.ndarray) -> None:
    connection.send(_pesq_score(sample_rate, ref, deg))
    connection.close()


def pesq_wb(ref, deg, sample_rate: int = SAMPLE_RATE) -> float:
    """Wide-band PESQ (ITU-T P.862.2) MOS-LQO, about 1.04 .. 4.64 (identical signals).

    Scored in a child process (one per call, forked from a forkserver that has this module
    imported): the pesq C library segfaults on some long signals (a 116 s piano piece, 200 s of a
    synthetic tone), which would kill the whole command; a crash is a MetricError for that pair.
    Not a pool: a pool's idle worker outlives the call, and a process that exits (a worker of
    benchmarks/codec_quality.py's own pool, say) then waits on it forever."""
    ref, deg = check_pair(ref, deg, sample_rate, "PESQ-WB", SAMPLE_RATE)
    _import("pesq")   # MetricUnavailable here, not in the child
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_pesq_child, args=(send, sample_rate, ref, deg), daemon=True)
    child.start()
    send.close()
    try:
        score, error = receive.recv()
    except EOFError:
        child.join()
        raise MetricError(f"PESQ-WB crashed in the pesq C library (exit code {child.exitcode}) "
                          f"on {ref.size / sample_rate:.1f} s of audio (it is meant for 8-20 s of "
                          "speech; score shorter excerpts)") from None
    finally:
        receive.close()
    child.join()
    if error is not None:
        raise MetricError(f"PESQ-WB failed ({error}); it needs at least ~0.25 s of speech in the "
                          "reference and a non-silent degraded signal")
    return score


def stoi(ref, deg, sample_rate: int = SAMPLE_RATE, extended: bool = False) -> float:
    """Short-time objective intelligibility, 0 .. 1 (identical); `extended` for ESTOI."""
    ref, deg = check_pair(ref, deg, sample_rate, "STOI")
    pystoi = _import("pystoi")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = float(pystoi.stoi(ref, deg, sample_rate, extended=extended))
    # pystoi warns and returns 1e-5 when too few frames survive its silence removal.
    if not np.isfinite(score) or any("Not enough STFT frames" in str(w.message) for w in caught):
        raise MetricError(f"STOI cannot score {ref.size / sample_rate:.2f} s of audio: fewer than "
                          "30 frames of the reference are within 40 dB of its loudest frame "
                          "(too short or silent)")
    return score


# --- mel distance -----------------------------------------------------------------------------

def log_mel(wav: np.ndarray, sample_rate: int = SAMPLE_RATE, n_fft: int = 1024, hop: int = 256,
            n_mels: int = 80, floor: float = 1e-5) -> np.ndarray:
    """Natural-log magnitude mel spectrogram (Hann window, centred frames, HTK mel filters):
    `[samples] -> [frames, n_mels]`, frames = 1 + samples // hop."""
    wav = np.asarray(wav, dtype=np.float64)
    padded = np.pad(wav, (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    magnitude = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=-1))
    mel = magnitude @ mel_filterbank(n_fft, n_mels, sample_rate).astype(np.float64)
    return np.log(np.maximum(mel, floor))


def mel_distance(ref, deg, sample_rate: int = SAMPLE_RATE, **mel_kwargs) -> float:
    """Mean absolute difference of log-mel spectrograms (`log_mel`); 0 for identical signals,
    lower is better."""
    ref, deg = check_pair(ref, deg, sample_rate, "mel distance")
    return float(np.mean(np.abs(log_mel(ref, sample_rate, **mel_kwargs)
                                - log_mel(deg, sample_rate, **mel_kwargs))))


# --- all at once ------------------------------------------------------------------------------

def measure(ref, deg, sample_rate: int = SAMPLE_RATE, metrics: Sequence[str] = METRICS, *,
            visqol_lattice: bool = False) -> tuple[dict[str, float], dict[str, str]]:
    """Scores one pair with each of `metrics`. Returns (scores, failures): a metric that cannot
    score this pair (MetricError) is left out of `scores` and its reason put in `failures`.
    Bad inputs (shape, dtype, length, rate) and missing packages still raise."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    functions: Mapping[str, object] = {
        "visqol": functools.partial(visqol_speech, lattice=visqol_lattice),
        "pesq": pesq_wb, "stoi": stoi, "mel_distance": mel_distance}
    scores: dict[str, float] = {}
    failures: dict[str, str] = {}
    for name in metrics:
        try:
            scores[name] = functions[name](ref, deg, sample_rate)
        except MetricError as e:
            failures[name] = str(e)
    return scores, failures
