"""Speaker similarity from an independent speaker encoder (Table III's check beside the classifier).

The speaker classifier (eval/speaker_classifier.py) is trained on the small world's own voices;
resemblyzer's VoiceEncoder (a GE2E d-vector model trained on thousands of other speakers, its
weights shipped in the wheel: nothing is downloaded) gives an independent measure: the cosine
between the embeddings of a generated file and of its reference.

    reference of a continuation (prompt excluded): the prompt, the source's first `prompt_seconds`
    reference of a reconstruction / acoustic generation: the whole source utterance

Two rows calibrate the scale on the sources of the continuations: `original_continuation` (the
real rest of the utterance against its prompt: the same voice, new words) and `other_speaker`
(the real rest against the prompts of every other voice among the sources: the floor).
"""
from __future__ import annotations

import warnings
from typing import Callable, Mapping

import numpy as np

from audiolm_jax.audio import SAMPLE_RATE

MIN_SECONDS = 0.5   # shorter audio (after resemblyzer's silence trimming) gives no embedding


class SpeakerEncoder:
    """resemblyzer's VoiceEncoder on the CPU: `embed(wav float [samples] at 16 kHz)` -> unit
    vector [256], or None for audio with under MIN_SECONDS of voiced sound."""

    def __init__(self):
        try:
            with warnings.catch_warnings():   # webrtcvad's import of pkg_resources
                warnings.simplefilter("ignore", UserWarning)
                from resemblyzer import VoiceEncoder, preprocess_wav  # noqa: PLC0415
        except ImportError as e:
            raise ImportError(f"speaker similarity needs resemblyzer ({e}); install the eval "
                              "extra: pip install -e '.[eval]'") from e
        self._encoder = VoiceEncoder("cpu", verbose=False)
        self._preprocess = preprocess_wav

    def embed(self, wav: np.ndarray) -> np.ndarray | None:
        voiced = self._preprocess(np.asarray(wav, np.float32), source_sr=SAMPLE_RATE)
        if voiced.size < MIN_SECONDS * SAMPLE_RATE:
            return None
        return np.asarray(self._encoder.embed_utterance(voiced), np.float64)


def cosine(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None:
        return None
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def _row(values: list[float | None], seed: int, **extra) -> dict:
    from audiolm_jax.eval.stats import mean_summary  # noqa: PLC0415

    kept = [v for v in values if v is not None]
    return {**mean_summary(kept, seed=seed), "too_short": len(values) - len(kept), **extra}


def similarity_table(encoder, index, generated: Mapping[str, str],
                     continuation_kinds: frozenset[str] = frozenset({"continuation",
                                                                     "acoustic_only"}),
                     prompt_seconds: float = 3.0, seed: int = 0,
                     progress: Callable[[str], None] | None = None) -> dict:
    """{row: {"value": mean cosine, "ci95", "n", "too_short", ...}} for each {kind: directory} of
    generated audio (kinds in `continuation_kinds` skip their prompt and compare with it), plus
    the two calibration rows over the continuations' sources."""
    from audiolm_jax.eval.tables import generated_files, load_after  # noqa: PLC0415

    prompt = int(round(prompt_seconds * SAMPLE_RATE))
    cache: dict[tuple[str, str], np.ndarray | None] = {}

    def source_part(example, part: str):   # part: "prompt", "rest" or "all" of a source
        if (example.id, part) not in cache:
            wav = load_after(example.path)
            cache[(example.id, part)] = encoder.embed(
                {"prompt": wav[:prompt], "rest": wav[prompt:], "all": wav}[part])
        return cache[(example.id, part)]

    out, continued = {}, {}
    for kind, directory in generated.items():
        matched, unmatched = generated_files(directory, index)
        is_continuation = kind in continuation_kinds
        values = []
        for path, source in matched:
            skip = prompt_seconds if is_continuation else 0.0
            values.append(cosine(encoder.embed(load_after(path, skip)),
                                 source_part(source, "prompt" if is_continuation else "all")))
            if is_continuation:
                continued[source.id] = source
        out[kind] = _row(values, seed, directory=directory, unmatched=len(unmatched),
                         reference="prompt" if is_continuation else "source utterance")
        if progress:
            progress(f"similarity {kind}: {out[kind]['value']:.3f} ({out[kind]['n']} files)")
    if continued:
        sources = [continued[k] for k in sorted(continued)]
        out["original_continuation"] = _row(
            [cosine(source_part(s, "rest"), source_part(s, "prompt")) for s in sources], seed,
            reference="prompt (same utterance)")
        others = [cosine(source_part(s, "rest"), source_part(o, "prompt"))
                  for s in sources for o in sources if o.speaker != s.speaker]
        out["other_speaker"] = _row(others, seed, reference="prompts of the other voices")
    return out
