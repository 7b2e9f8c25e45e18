"""Codec quality: SoundStream at 1.5, 2, 3 and 6 kbps against Opus (VBR and hard-CBR), scored with
ViSQOL (speech mode), PESQ-WB, STOI and log-mel distance on held-out voices.

    python benchmarks/codec_quality.py --corpus /tmp/world_speech --split heldout_voices \\
        --checkpoint CKPT_DIR --gin_file models/codec_paper_speech --num-utterances 40 \\
        --out results/codec_quality.json

(`--random-init` instead of `--checkpoint` measures an untrained model: a smoke test.)
Utterances are a seeded random draw from the split. Each utterance is encoded once with the
highest quantizer count needed and decoded with the first Q levels per bitrate (residual VQ codes
of level q do not depend on later levels), in length buckets so each shape compiles once. Opus
encodes the same 16 kHz audio and is decoded at 16 kHz; its real bitrates (file and payload) are
reported per condition. Scores are computed in worker processes; each condition gets a mean and a
95% bootstrap CI over utterances, and the 6 and 2 kbps codec-vs-Opus differences a paired CI.
A few examples (original, codec and Opus at each rate) are written as WAVs to --examples-dir.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import multiprocessing
import os
import sys
import time
from typing import Any, Sequence

import numpy as np

from audiolm_jax.audio import AudioError, load_audio, save_audio
from audiolm_jax.codec import bitrate_kbps, decode_batch, encode_batch
from audiolm_jax.codec.soundstream import SoundStream
from audiolm_jax.config import split_gin_flags
from audiolm_jax.data.corpus import Example, scan_corpus
from audiolm_jax.eval import codec_metrics, opus
from audiolm_jax.eval.codec_model import build_codec
from audiolm_jax.eval.run_info import command_line, machine_info, utc_now, write_json

CODEC_KBPS = (1.5, 2.0, 3.0, 6.0)
OPUS_MODES = ("vbr", "hard-cbr")
COMPARE_KBPS = (6.0, 2.0)            # the paper's claim is at 6 kbps; 2 kbps is its coarse rate
CLAIM_METRICS = ("visqol", "pesq")   # "the codec beats Opus at 6 kbps on ViSQOL and PESQ"
SAMPLE_RATE = 16000


# --- conditions -------------------------------------------------------------------------------

def kbps_label(kbps: float) -> str:
    return f"{kbps:g}kbps"


def codec_condition(kbps: float) -> str:
    return f"codec_{kbps_label(kbps)}"


def opus_condition(kbps: float, mode: str) -> str:
    """opus_6kbps is opusenc's default (VBR); other modes are named: opus_hard-cbr_6kbps."""
    return f"opus_{kbps_label(kbps)}" if mode == "vbr" else f"opus_{mode}_{kbps_label(kbps)}"


def quantizers_for(model: SoundStream, kbps: float) -> int:
    """The number of RVQ levels that gives `kbps` exactly (Q x log2(N) x frame rate)."""
    per_level = bitrate_kbps(1, model.codebook_size, model.config.frame_rate)
    levels = kbps / per_level
    if abs(levels - round(levels)) > 1e-6 or not 1 <= round(levels) <= model.num_quantizers:
        rates = [f"{bitrate_kbps(q, model.codebook_size, model.config.frame_rate):g}"
                 for q in range(1, model.num_quantizers + 1)]
        raise ValueError(f"{kbps:g} kbps is not a bitrate of this codec (Q={model.num_quantizers} "
                         f"levels of N={model.codebook_size} at {model.config.frame_rate:g} Hz); "
                         f"choose from {', '.join(rates)} kbps")
    return int(round(levels))


# --- utterances -------------------------------------------------------------------------------

def select_utterances(examples: Sequence[Example], count: int, seed: int) -> list[Example]:
    """`count` examples drawn without replacement by `seed` (all of them if fewer), in id order."""
    order = np.random.default_rng(seed).permutation(len(examples))[:count]
    return sorted((examples[i] for i in order), key=lambda e: e.id)


def load_utterances(examples: Sequence[Example]) -> tuple[list[tuple[Example, np.ndarray]],
                                                           dict[str, str]]:
    """(example, float32 16 kHz audio) pairs; unreadable files are skipped with their reason."""
    loaded, skipped = [], {}
    for example in examples:
        try:
            loaded.append((example, load_audio(example.path, SAMPLE_RATE)))
        except AudioError as e:
            skipped[example.path] = str(e)
    return loaded, skipped


# --- codec ------------------------------------------------------------------------------------

def codec_reconstructions(model: SoundStream, wavs: Sequence[np.ndarray],
                          levels: Sequence[int], batch_size: int = 8,
                          bucket_seconds: float = 5.0) -> dict[int, list[np.ndarray]]:
    """{q: [decoded audio of each wav with the first q RVQ levels]}, each as long as its input.

    Inputs are grouped by length into buckets of `bucket_seconds` and padded (at the end, with
    zeros; the codec is causal so this changes no kept sample) to the bucket length, in batches
    of up to `batch_size` rows (a smaller last batch is padded with silent rows to a power of
    two): few shapes, so few compiles, and little work spent on padding.
    """
    bucket = max(model.hop_length, int(round(bucket_seconds * model.sample_rate / model.hop_length))
                 * model.hop_length)
    out: dict[int, list[Any]] = {q: [None] * len(wavs) for q in levels}
    order = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(-(-len(wavs[i]) // bucket) * bucket, []).append(i)
    for length, members in groups.items():
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            rows = min(batch_size, 1 << (len(chunk) - 1).bit_length())
            batch = np.zeros((rows, length), np.float32)
            for row, i in enumerate(chunk):
                batch[row, :len(wavs[i])] = wavs[i]
            codes = encode_batch(model, batch, num_quantizers=max(levels))
            for q in levels:
                audio = decode_batch(model, codes[..., :q])
                for row, i in enumerate(chunk):
                    out[q][i] = audio[row, :len(wavs[i])].copy()
    return out


# --- scoring (runs in worker processes) -------------------------------------------------------

def _init_worker() -> None:
    # Each worker is one process of the pool: keep numba (inside ViSQOL) to one thread.
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")


def score_pair(ref: np.ndarray, deg: np.ndarray, metrics: Sequence[str],
               visqol_lattice: bool) -> dict[str, Any]:
    scores, failures = codec_metrics.measure(ref, deg, SAMPLE_RATE, metrics,
                                             visqol_lattice=visqol_lattice)
    return {"scores": scores, "failures": failures}


def score_opus(ref: np.ndarray, kbps: float, mode: str, metrics: Sequence[str],
               visqol_lattice: bool, keep_audio: bool) -> dict[str, Any]:
    try:
        result = opus.opus_round_trip(ref, kbps, sample_rate=SAMPLE_RATE, mode=mode,
                                      output_rate=SAMPLE_RATE)
    except opus.OpusError as e:
        return {"scores": {}, "failures": {m: f"opus: {e}" for m in metrics}}
    out = score_pair(ref, result.audio, metrics, visqol_lattice)
    out.update(real_kbps=result.real_kbps, payload_kbps=result.payload_kbps,
               audio=result.audio if keep_audio else None)
    return out


class _InlineExecutor(concurrent.futures.Executor):
    """workers=0: score in this process (debugging, tiny runs)."""

    def submit(self, fn, /, *args, **kwargs):
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - delivered through the future, as a pool does
            future.set_exception(e)
        return future


def _executor(workers: int) -> concurrent.futures.Executor:
    if workers <= 0:
        return _InlineExecutor()
    # spawn, not fork: the parent runs JAX, whose threads do not survive a fork.
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker)


# --- statistics -------------------------------------------------------------------------------

def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; (nan, nan) for no values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def summary(values: Sequence[float], seed: int) -> dict[str, Any]:
    values = [v for v in values if v is not None]
    mean = float(np.mean(values)) if values else float("nan")
    return {"mean": mean, "ci95": list(bootstrap_ci(values, seed=seed)), "n": len(values)}


def paired_difference(a: Sequence[float | None], b: Sequence[float | None], seed: int
                      ) -> dict[str, Any]:
    """a - b over the utterances both scored: mean and 95% bootstrap CI."""
    diffs = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    return summary(diffs, seed)


# --- the benchmark ----------------------------------------------------------------------------

def measure_quality(model: SoundStream, utterances: Sequence[tuple[str, np.ndarray]], *,
                    codec_kbps: Sequence[float] = CODEC_KBPS,
                    opus_kbps: Sequence[float] | None = None,
                    opus_modes: Sequence[str] = OPUS_MODES,
                    metrics: Sequence[str] = codec_metrics.METRICS, workers: int = 2,
                    batch_size: int = 8, bucket_seconds: float = 5.0, seed: int = 0,
                    visqol_lattice: bool = False, examples_dir: str | None = None,
                    example_ids: Sequence[str] = ()) -> dict[str, Any]:
    """Scores `model` and Opus on `utterances` ([(id, float32 16 kHz audio [samples])]).

    Returns {metric: {condition: mean}, "conditions": {condition: details},
    "comparisons": {...}, "per_utterance": {...}, "seconds": {...}}; conditions are
    codec_{R}kbps and opus_{R}kbps (VBR) / opus_{mode}_{R}kbps. workers > 0 scores in that
    many spawned processes (a script calling this needs the `if __name__ == "__main__":` guard);
    0 scores here. example_ids: utterances whose audio is written to `examples_dir`.
    """
    if not utterances:
        raise ValueError("measure_quality got no utterances")
    opus_kbps = tuple(codec_kbps if opus_kbps is None else opus_kbps)
    if opus_kbps and opus_modes:
        opus.require_opus_tools()
    levels = {kbps: quantizers_for(model, kbps) for kbps in codec_kbps}
    ids = [u for u, _ in utterances]
    wavs = [np.asarray(w, np.float32) for _, w in utterances]
    example_ids = set(example_ids) if examples_dir else set()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    jobs: dict[tuple[str, str], concurrent.futures.Future] = {}
    opus_specs = {opus_condition(k, m): (k, m) for m in opus_modes for k in opus_kbps}
    with _executor(workers) as pool:
        # Opus needs no model: its jobs start first and run while the parent runs the codec.
        for name, (kbps, mode) in opus_specs.items():
            for uid, wav in zip(ids, wavs):
                jobs[name, uid] = pool.submit(score_opus, wav, kbps, mode, tuple(metrics),
                                              visqol_lattice, uid in example_ids)
        t = time.perf_counter()
        decoded = codec_reconstructions(model, wavs, sorted(set(levels.values())), batch_size,
                                        bucket_seconds) if levels else {}
        timings["codec_inference"] = time.perf_counter() - t
        for kbps, q in levels.items():
            for uid, wav, deg in zip(ids, wavs, decoded[q]):
                jobs[codec_condition(kbps), uid] = pool.submit(score_pair, wav, deg,
                                                               tuple(metrics), visqol_lattice)
        results = {key: future.result() for key, future in jobs.items()}
    timings["total"] = time.perf_counter() - start

    conditions: dict[str, dict[str, Any]] = {}
    per_utterance: dict[str, dict[str, list]] = {m: {} for m in metrics}
    codec_specs = {codec_condition(k): k for k in codec_kbps}
    names = list(codec_specs) + list(opus_specs)
    for c, name in enumerate(names):
        rows = [results[name, uid] for uid in ids]
        if name in opus_specs:
            kbps, mode = opus_specs[name]
            info: dict[str, Any] = {
                "kind": "opus", "mode": mode, "nominal_kbps": kbps,
                "real_kbps": summary([r.get("real_kbps") for r in rows], seed + c),
                "payload_kbps": summary([r.get("payload_kbps") for r in rows], seed + c)}
        else:
            kbps = codec_specs[name]
            info = {"kind": "codec", "nominal_kbps": kbps, "num_quantizers": levels[kbps],
                    "real_kbps": {"mean": kbps, "ci95": [kbps, kbps], "n": len(rows)}}
        info["metrics"] = {}
        for m in metrics:
            values = [r["scores"].get(m) for r in rows]
            per_utterance[m][name] = values
            info["metrics"][m] = summary(values, seed + c)
            info["metrics"][m]["failures"] = sum(m in r["failures"] for r in rows)
        failures = {uid: r["failures"] for uid, r in zip(ids, rows) if r["failures"]}
        if failures:
            info["failures"] = failures
        conditions[name] = info

    result: dict[str, Any] = {m: {name: conditions[name]["metrics"][m]["mean"] for name in names}
                              for m in metrics}
    result.update(conditions=conditions, comparisons=compare(conditions, per_utterance, seed),
                  utterances=ids, per_utterance=per_utterance,
                  metric_info={"higher_is_better": {m: codec_metrics.HIGHER_IS_BETTER[m]
                                                    for m in metrics},
                               "visqol_mapping": "lattice" if visqol_lattice else "polynomial",
                               "mel_distance": "mean |ln mel| difference, n_fft 1024, hop 256, "
                                               "80 HTK mels, Hann, floor 1e-5",
                               "ci": "95% percentile bootstrap of the mean over utterances, "
                                     "2000 resamples"},
                  seconds=timings)
    if examples_dir:
        result["examples"] = write_examples(examples_dir, ids, wavs, levels, decoded, results,
                                            opus_specs, example_ids)
    return result


def write_reconstructions(model: SoundStream, utterances: Sequence[tuple[str, np.ndarray]],
                          codec_kbps: Sequence[float], directory: str, batch_size: int = 8,
                          bucket_seconds: float = 5.0) -> dict[str, Any]:
    """Writes {directory}/codec_{R}kbps/{id}.wav for each rate; returns {condition: files}."""
    levels = {kbps: quantizers_for(model, kbps) for kbps in codec_kbps}
    start = time.perf_counter()
    decoded = codec_reconstructions(model, [np.asarray(w, np.float32) for _, w in utterances],
                                    sorted(set(levels.values())), batch_size, bucket_seconds)
    written: dict[str, Any] = {}
    for kbps, q in levels.items():
        name = codec_condition(kbps)
        for (uid, _), audio in zip(utterances, decoded[q]):
            save_audio(os.path.join(directory, name, f"{uid}.wav"), audio, SAMPLE_RATE)
        written[name] = len(utterances)
    print(f"wrote {written} under {directory} ({time.perf_counter() - start:.1f} s)")
    return written


def compare(conditions: dict[str, dict], per_utterance: dict[str, dict[str, list]],
            seed: int) -> dict[str, Any]:
    """Codec vs each Opus mode at the same nominal rate, for the rates in COMPARE_KBPS."""
    out: dict[str, Any] = {}
    for kbps in COMPARE_KBPS:
        codec = codec_condition(kbps)
        if codec not in conditions:
            continue
        for name, info in conditions.items():
            if info["kind"] != "opus" or info["nominal_kbps"] != kbps:
                continue
            entry: dict[str, Any] = {"opus_real_kbps": info["real_kbps"]["mean"],
                                     "opus_payload_kbps": info["payload_kbps"]["mean"],
                                     "codec_kbps": kbps}
            for m, scores in per_utterance.items():
                sign = 1.0 if codec_metrics.HIGHER_IS_BETTER[m] else -1.0
                diff = paired_difference(scores[codec], scores[name], seed)
                entry[m] = {"codec": conditions[codec]["metrics"][m]["mean"],
                            "opus": info["metrics"][m]["mean"],
                            "codec_minus_opus": diff,
                            "codec_better": bool(sign * diff["mean"] > 0) if diff["n"] else None}
            present = [m for m in CLAIM_METRICS if m in per_utterance]
            entry["codec_better_on_" + "_and_".join(present)] = (
                all(entry[m]["codec_better"] for m in present) if present else None)
            out[f"{codec}_vs_{name}"] = entry
    return out


def write_examples(directory: str, ids: Sequence[str], wavs: Sequence[np.ndarray],
                   levels: dict[float, int], decoded: dict[int, list[np.ndarray]],
                   results: dict, opus_specs: dict, example_ids: set[str]) -> list[str]:
    """{directory}/{utt}/original.wav, codec_{R}kbps.wav, opus_..._{R}kbps.wav for listening."""
    written = []
    for i, uid in enumerate(ids):
        if uid not in example_ids:
            continue
        folder = os.path.join(directory, uid)
        save_audio(os.path.join(folder, "original.wav"), wavs[i], SAMPLE_RATE)
        for kbps, q in levels.items():
            save_audio(os.path.join(folder, f"{codec_condition(kbps)}.wav"), decoded[q][i],
                       SAMPLE_RATE)
        for name in opus_specs:
            audio = results[name, uid].get("audio")
            if audio is not None:
                save_audio(os.path.join(folder, f"{name}.wav"), audio, SAMPLE_RATE)
        written.append(folder)
    return written


def pick_examples(examples: Sequence[Example], count: int) -> list[str]:
    """Ids of `count` examples for listening, taken round-robin over speakers."""
    by_speaker: dict[str, list[str]] = {}
    for e in examples:
        by_speaker.setdefault(e.speaker, []).append(e.id)
    rounds = itertools.zip_longest(*by_speaker.values())
    return [i for row in rounds for i in row if i is not None][:count]


def corpus_summary(root: str, split: str, available: int, chosen: Sequence[Example],
                   loaded: Sequence[tuple[Example, np.ndarray]], skipped: dict[str, str]
                   ) -> dict[str, Any]:
    built = {}
    path = os.path.join(root, "summary.json")
    if os.path.isfile(path):
        with open(path) as f:
            whole = json.load(f)
        built = {k: whole[k] for k in ("corpus", "builder", "hours", "seed") if k in whole}
    seconds = [len(w) / SAMPLE_RATE for _, w in loaded]
    return {"root": root, "split": split, "utterances_in_split": available,
            "utterances_drawn": len(chosen), "utterances_used": len(loaded),
            "speakers_used": sorted({e.speaker for e, _ in loaded}),
            "seconds_used": float(sum(seconds)),
            "seconds_per_utterance": {"min": min(seconds, default=0.0),
                                      "max": max(seconds, default=0.0)},
            "skipped": skipped, "built": built}


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str], list[str]]:
    gin_files, gin_bindings, rest = split_gin_flags(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="speech root in the Libri-Light layout")
    parser.add_argument("--split", default="heldout_voices")
    parser.add_argument("--layout", default="libri_light", help="libri_light or librispeech")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="codec checkpoint directory (the trainer's)")
    source.add_argument("--random-init", action="store_true", help="untrained codec (smoke test)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (newest if unset)")
    parser.add_argument("--num-utterances", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="utterance draw and bootstrap seed")
    parser.add_argument("--codec-kbps", type=float, nargs="+", default=list(CODEC_KBPS))
    parser.add_argument("--opus-kbps", type=float, nargs="*", default=None,
                        help="Opus target rates (default: the codec's)")
    parser.add_argument("--opus-modes", nargs="*", default=list(OPUS_MODES),
                        choices=sorted(opus.MODES))
    parser.add_argument("--metrics", nargs="+", default=list(codec_metrics.METRICS),
                        choices=codec_metrics.METRICS)
    parser.add_argument("--visqol-lattice", action="store_true",
                        help="ViSQOL's deep-lattice MOS mapping (needs visqol-python[lattice])")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="scoring processes (0: in this process)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bucket-seconds", type=float, default=5.0)
    parser.add_argument("--examples-dir", default="outputs/codec_quality_examples",
                        help="where example WAVs go ('' for none)")
    parser.add_argument("--num-examples", type=int, default=3)
    parser.add_argument("--reconstructions-dir", default=None,
                        help="only write the codec's reconstructions, DIR/codec_{R}kbps/<id>.wav, "
                             "and score nothing (a machine without the scorers; score them "
                             "elsewhere with score_reconstructions.py)")
    parser.add_argument("--out", default="results/codec_quality.json")
    args = parser.parse_args(rest)
    if not gin_files:
        parser.error("pass the codec's gin config, e.g. --gin_file models/codec_paper_speech")
    return args, gin_files, gin_bindings


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, gin_files, gin_bindings = parse_args(argv)
    start = time.perf_counter()
    model, source = build_codec(gin_files, gin_bindings, checkpoint=args.checkpoint,
                                step=args.step, seed=args.seed)
    index = scan_corpus(args.corpus, args.layout, splits=[args.split])
    available = index.split(args.split)
    chosen = select_utterances(available, args.num_utterances, args.seed)
    loaded, skipped = load_utterances(chosen)
    for path, reason in skipped.items():
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if len(loaded) < args.num_utterances:
        print(f"note: {len(loaded)} of the {args.num_utterances} utterances asked for are used "
              f"({len(available)} in {args.split}, {len(skipped)} unreadable)", file=sys.stderr)
    if args.reconstructions_dir:
        return write_reconstructions(model, [(e.id, w) for e, w in loaded], args.codec_kbps,
                                     args.reconstructions_dir, args.batch_size,
                                     args.bucket_seconds)
    result = measure_quality(
        model, [(e.id, w) for e, w in loaded], codec_kbps=args.codec_kbps,
        opus_kbps=args.opus_kbps, opus_modes=args.opus_modes, metrics=args.metrics,
        workers=args.workers, batch_size=args.batch_size, bucket_seconds=args.bucket_seconds,
        seed=args.seed, visqol_lattice=args.visqol_lattice,
        examples_dir=args.examples_dir or None,
        example_ids=pick_examples([e for e, _ in loaded], args.num_examples))
    result["seconds"]["wall"] = time.perf_counter() - start
    result = {"benchmark": "codec_quality", "command": command_line(argv, __file__),
              "date": utc_now(), "machine": machine_info(), "model": source,
              "corpus": corpus_summary(index.root, args.split, len(available), chosen, loaded,
                                       skipped), **result}
    write_json(args.out, result)
    headline = {m: {k: round(v, 3) if v is not None else None
                    for k, v in result[m].items()} for m in args.metrics}
    print(json.dumps(headline, indent=1))
    print(f"wrote {args.out} ({result['seconds']['wall']:.1f} s)")
    return result


if __name__ == "__main__":
    main()
