"""The semantic-vs-acoustic ABX measurement (AudioLM Table I, Figure 3) on a corpus split.

    run_abx(corpus, split, tokenizer=, w2v_bert=, codec=) -> {
        "abx_within": {name: error}, "abx_across": {name: error},
        "counts": {name: items, dropped items, groups, ...},
        "abx_ci95": {condition: {name: [lo, hi]}},
        "abx_paired": {condition: {"semantic - acoustic_6kbps": {"difference", "ci95"}, ...}}, ...}

names: `layer_1..layer_L` (raw MLM-layer activations of `w2v_bert`, else of the tokenizer's
model), `semantic` (tokenizer ids), `acoustic_2kbps` / `acoustic_6kbps` (codec tokens of the first
4 / 12 RVQ levels for the paper's codec, see abx_features.levels_for_kbps) and `log_mel`. Those
whose model is not given are left out. Errors are fractions in [0, 1] (ZeroSpeech tables print
percentages). The `audiolm-jax eval abx` command and benchmarks/semantic.py call this.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from audiolm_jax.audio import load_audio
from audiolm_jax.codec.soundstream import SoundStream
from audiolm_jax.eval.abx import LEVELS, AbxResult, abx_error
from audiolm_jax.eval.abx_bootstrap import context_draws, interval, replicate_errors
from audiolm_jax.eval.abx_corpus import read_split, select_utterances
from audiolm_jax.eval.abx_features import (
    TOKEN_MODES,
    CodecTokens,
    SemanticTokens,
    W2vBertLayers,
    levels_for_kbps,
    log_mel_features,
)
from audiolm_jax.semantic.tokenizer import SemanticTokenizer
from audiolm_jax.semantic.w2v_bert import W2vBert

ACOUSTIC_KBPS = {"acoustic_2kbps": 2.0, "acoustic_6kbps": 6.0}


def run_abx(corpus: str | Path, split: str = "heldout_voices", *,
            tokenizer: SemanticTokenizer | str | Path | None = None,
            w2v_bert: W2vBert | None = None, codec: SoundStream | None = None,
            max_items: int | None = None, token_mode: str = "embedding",
            acoustic_kbps: dict[str, float] | None = None, log_mel: bool = True,
            max_group_size: int | None = 10, max_x_speakers: int | None = 5, seed: int = 0,
            bucket_seconds: float = 2.0, extent: str = "triphone", bootstrap: int = 1000,
            progress: Callable[[str], None] = print) -> dict:
    """Triphone ABX (eval/abx.py) of every feature the given models provide, on one split.

    tokenizer: a SemanticTokenizer or its saved directory (gives `semantic`, and the layers when
      `w2v_bert` is None). w2v_bert: the model whose MLM layers are scored. codec: a SoundStream.
    token_mode: "embedding" scores tokens by their vectors (centroids, quantized embeddings) with
      the angular distance; "onehot" by their ids with the mismatch (0/1 per level) distance.
    max_items: cap on items (whole utterances, speakers in turn). bootstrap: replicates of the
    context bootstrap (abx_bootstrap; 0: no intervals). Other arguments: abx_error.
    """
    start = time.perf_counter()
    if token_mode not in TOKEN_MODES:
        raise ValueError(f"token_mode={token_mode!r}: choose one of {TOKEN_MODES}")
    if isinstance(tokenizer, (str, Path)):
        tokenizer = SemanticTokenizer.load(tokenizer)
    utterances = select_utterances(read_split(corpus, split, extent=extent), max_items)
    items = [item for u in utterances for item in u.items]
    token_distance = "angular" if token_mode == "embedding" else "mismatch"

    # name -> (frame rate, distance, per-utterance extractor returning {name: [frames, dim]}).
    extractors: list[tuple[Callable[[np.ndarray], dict], dict[str, tuple[float, str]]]] = []
    layer_model = w2v_bert if w2v_bert is not None else (tokenizer.model if tokenizer else None)
    if layer_model is not None:
        layers = W2vBertLayers(layer_model, bucket_seconds)
        names = {f"layer_{i + 1}": (layers.frame_rate, "angular") for i in range(layers.num_layers)}
        extractors.append((lambda w, f=layers: {f"layer_{i + 1}": h for i, h in enumerate(f(w))},
                           names))
    if tokenizer is not None:
        semantic = SemanticTokens(tokenizer, token_mode, bucket_seconds)
        extractors.append((lambda w, f=semantic: {"semantic": f(w)},
                           {"semantic": (semantic.frame_rate, token_distance)}))
    acoustic_levels = {}
    if codec is not None:
        acoustic_levels = {name: levels_for_kbps(codec, kbps)
                           for name, kbps in (acoustic_kbps or ACOUSTIC_KBPS).items()}
        tokens = CodecTokens(codec, sorted(set(acoustic_levels.values())), token_mode,
                             bucket_seconds)

        def acoustic(wav, tokens=tokens):
            by_levels = tokens(wav)
            return {name: by_levels[q] for name, q in acoustic_levels.items()}

        extractors.append((acoustic, {name: (tokens.frame_rate, token_distance)
                                      for name in acoustic_levels}))
    if log_mel:
        extractors.append((lambda w: {"log_mel": log_mel_features(w, bucket_seconds=bucket_seconds)},
                           {"log_mel": (100.0, "angular")}))

    features: dict[str, dict[str, np.ndarray]] = {}
    specs: dict[str, tuple[float, str]] = {}
    for _, names in extractors:
        specs.update(names)
        for name in names:
            features[name] = {}
    audio_seconds = 0.0
    for k, utt in enumerate(utterances):
        wav = load_audio(utt.audio)
        audio_seconds += len(wav) / 16000.0
        for extract, _ in extractors:
            for name, feats in extract(wav).items():
                features[name][utt.name] = feats
        if progress and (k + 1) % 50 == 0:
            progress(f"abx: features of {k + 1}/{len(utterances)} utterances")
    extract_s = time.perf_counter() - start

    within, across, counts, results = {}, {}, {}, {}
    for name, (rate, distance) in specs.items():
        result = abx_error(items, features[name], rate, distance=distance,
                           max_group_size=max_group_size, max_x_speakers=max_x_speakers, seed=seed)
        results[name] = result
        within[name], across[name] = result.within, result.across
        counts[name] = {k: v for k, v in result.to_dict().items() if k not in ("within", "across")}
        counts[name].update(frame_rate=rate, distance=distance)
        if progress:
            progress(f"abx {name}: within {_pct(result.within)}, across {_pct(result.across)} "
                     f"({result.items} items, {result.within_groups}/{result.across_groups} groups)")
    intervals = bootstrap_intervals(results, bootstrap, seed) if bootstrap else {}
    if progress and intervals:
        for pair, row in intervals["abx_paired"]["across"].items():
            if pair.startswith("semantic") and row["ci95"] is not None:
                progress(f"abx across {pair}: {100 * row['difference']:+.2f} points "
                         f"(95% CI {100 * row['ci95'][0]:+.2f} to {100 * row['ci95'][1]:+.2f})")
    return {
        "abx_within": within, "abx_across": across, "counts": counts, **intervals,
        "corpus": str(Path(corpus).resolve()), "split": split,
        "utterances": len(utterances), "speakers": sorted({u.speaker for u in utterances}),
        "audio_hours": audio_seconds / 3600.0, "items_total": len(items),
        "acoustic_levels": acoustic_levels,
        "semantic_layer": tokenizer.layer if tokenizer is not None else None,
        "semantic_clusters": tokenizer.num_clusters if tokenizer is not None else None,
        "config": {"token_mode": token_mode, "max_items": max_items,
                   "max_group_size": max_group_size, "max_x_speakers": max_x_speakers,
                   "seed": seed, "extent": extent, "bucket_seconds": bucket_seconds,
                   "bootstrap_replicates": bootstrap,
                   "averaging": "within: context, speaker, phone pair; across: (context, X "
                                "speaker), A/B speaker, phone pair (libri-light eval_ABX)"},
        "seconds": {"features": round(extract_s, 2),
                    "abx": round(time.perf_counter() - start - extract_s, 2)},
    }


def bootstrap_intervals(results: dict[str, AbxResult], replicates: int = 1000, seed: int = 0
                        ) -> dict:
    """95% intervals of every feature's errors and paired intervals of the differences
    (semantic tokens and each layer minus each acoustic feature and log-mel), from one context
    bootstrap shared by all features (eval/abx_bootstrap.py):
        {"abx_ci95": {condition: {name: [lo, hi]}},
         "abx_paired": {condition: {"a - b": {"difference": d, "ci95": [lo, hi]}}}}"""
    contexts = sorted({key[0] for r in results.values() for scores in r.scores.values()
                       for key in scores})
    if not contexts:
        return {}
    draws = context_draws(contexts, replicates, seed)
    ours = [n for n in results if n == "semantic" or n.startswith("layer_")]
    theirs = [n for n in results if n.startswith("acoustic_") or n == "log_mel"]
    ci95, paired = {}, {}
    for condition in ("within", "across"):
        reps = {name: replicate_errors(r.scores.get(condition, {}), LEVELS[condition], draws,
                                       contexts) for name, r in results.items()}
        ci95[condition] = {name: interval(v) for name, v in reps.items()}
        paired[condition] = {}
        for a in ours:
            for b in theirs:
                ea, eb = getattr(results[a], condition), getattr(results[b], condition)
                if ea is not None and eb is not None:
                    paired[condition][f"{a} - {b}"] = {
                        "difference": ea - eb, "ci95": interval(reps[a] - reps[b])}
    return {"abx_ci95": ci95, "abx_paired": paired,
            "abx_bootstrap": {"replicates": replicates, "seed": seed, "unit": "triphone context",
                              "contexts": len(contexts)}}


def choose_layer_by_abx(corpus: str | Path, split: str, model: W2vBert, *,
                        max_items: int | None = 1000,
                        progress: Callable[[str], None] = print) -> tuple[int, dict]:
    """(1-based MLM layer, report): the layer of `model` whose raw activations have the lowest
    across-speaker ABX error on `split` (within-speaker on a one-speaker split), ties to the
    shallower layer, and every layer's errors. For `semantic fit-kmeans --select-layer-on`:
    AudioLM picks its layer by such a probe (Figure 3); pick on a split other than the one the
    tokens are reported on."""
    result = run_abx(corpus, split, w2v_bert=model, max_items=max_items, log_mel=False,
                     bootstrap=0, progress=progress)
    layers = sorted(result["abx_within"], key=lambda name: int(name.split("_")[1]))
    criterion = ("abx_across" if all(result["abx_across"][n] is not None for n in layers)
                 else "abx_within")
    scores = result[criterion]
    if any(scores[n] is None for n in layers):
        raise ValueError(f"{corpus}/{split}: {result['items_total']} ABX items gave no triphone "
                         "pairs to compare; raise the item count (--select-layer-items) or choose "
                         "a split with phone timings in its JSON sidecars")
    best = min(layers, key=lambda name: (scores[name], int(name.split("_")[1])))
    report = {"split": split, "max_items": max_items, "criterion": criterion,
              "items": result["items_total"], "speakers": result["speakers"],
              "abx_within": result["abx_within"], "abx_across": result["abx_across"],
              "layer": int(best.split("_")[1])}
    return report["layer"], report


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def feature_names(num_layers: int, acoustic: Sequence[str] = tuple(ACOUSTIC_KBPS)) -> list[str]:
    """The keys run_abx writes for a model with `num_layers` MLM layers and every model given."""
    return [f"layer_{i + 1}" for i in range(num_layers)] + ["semantic", *acoustic, "log_mel"]
