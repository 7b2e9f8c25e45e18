"""`audiolm-jax semantic`: fit the semantic tokenizer (k-means on w2v-BERT) and tokenize audio.

    audiolm-jax semantic fit-kmeans --checkpoint RUN --corpus ROOT --split train --layer 7 \
        --clusters 1024 --out TOKENIZER [--max-hours H] [--gin_file=experiments/...]
    audiolm-jax semantic tokenize --tokenizer TOKENIZER IN.wav --out OUT.npy
    audiolm-jax semantic tokenize --tokenizer TOKENIZER IN_DIR --out OUT_DIR

Ids are int32 .npy files (no pickle), 25 per second of audio, in [0, K). A single file gets a JSON
sidecar (OUT.json); a directory run mirrors the input tree (a.flac -> a.npy) and writes
`tokens.json` at the top with every file's frame count and the files it skipped (unreadable or
shorter than one 40 ms frame) with the reason.

Each utterance is tokenized on its own, zero-padded to the next multiple of `--bucket-seconds`
(one compiled program per bucket, not per length) with its true length passed to the model, so
padding never reaches attention; at least one frame of padding is always added, which makes the
ids independent of the bucket size.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

IDS_FORMAT = "audiolm_jax.semantic_ids"
MANIFEST = "tokens.json"


def register(sub: argparse._SubParsersAction) -> None:
    semantic = sub.add_parser(
        "semantic", help="fit the semantic tokenizer (k-means on w2v-BERT) and tokenize audio",
        description="The semantic tokenizer of AudioLM: k-means on standardised activations of one "
                    "MLM layer of a trained w2v-BERT, giving token ids at 25 Hz.")
    actions = semantic.add_subparsers(dest="action", required=True, metavar="ACTION")

    fit = actions.add_parser(
        "fit-kmeans", help="fit a tokenizer from a w2v-BERT checkpoint and a corpus split",
        description="Reads the newest checkpoint of a w2v-BERT run (the model's architecture comes "
                    "from the run's operative_config.gin), streams per-dimension statistics of "
                    "the chosen MLM layer over a corpus split, runs k-means, and saves a "
                    "SemanticTokenizer directory with fit.json. Defaults come from "
                    "KMeansFitConfig (gin: --gin_file=experiments/..., --gin.KMeansFitConfig.X=V); "
                    "flags override them.")
    fit.add_argument("--checkpoint", required=True, help="the run's workdir or its checkpoints/ folder")
    fit.add_argument("--corpus", required=True, help="root of a corpus tree (Libri-Light layout)")
    fit.add_argument("--split", default="train", help="split to fit on (default train)")
    fit.add_argument("--layer", type=int, default=None,
                     help="MLM layer, 1-based (AudioLM: 7; default from gin, else 7)")
    fit.add_argument("--select-layer-on", default=None, metavar="SPLIT",
                     help="choose the MLM layer with the lowest across-speaker ABX error on this "
                          "split of --corpus (needs phone timings in its JSON sidecars; the "
                          "per-layer errors go to fit.json); excludes --layer")
    fit.add_argument("--select-layer-items", type=int, default=1000,
                     help="ABX items for --select-layer-on (whole utterances, speakers in turn)")
    fit.add_argument("--clusters", type=int, default=None,
                     help="K, the vocabulary size (AudioLM: 1024; default from gin, else 1024)")
    fit.add_argument("--out", required=True, help="tokenizer directory to write (replaced)")
    fit.add_argument("--max-hours", type=float, default=None, help="read at most this much audio")
    fit.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    fit.add_argument("--layout", default=None,
                     help="corpus layout: libri_light (default), librispeech, piano")
    fit.set_defaults(func=_run_fit, takes_gin=True)

    tok = actions.add_parser(
        "tokenize", help="audio file or directory -> semantic ids (.npy)",
        description="Tokenizes one audio file (--out OUT.npy) or every audio file under a "
                    "directory (--out DIR, mirroring the tree). Ids: int32 [frames], 25 Hz.")
    tok.add_argument("--tokenizer", required=True, help="directory written by fit-kmeans")
    tok.add_argument("input", help="an audio file (FLAC/WAV/OGG) or a directory of them")
    tok.add_argument("--out", required=True, help="OUT.npy for a file, a directory for a directory")
    tok.add_argument("--bucket-seconds", type=float, default=2.0,
                     help="pad lengths up to a multiple of this (compiles once per bucket; default 2)")
    tok.set_defaults(func=_run_tokenize)


def _fail(action: str, error: BaseException) -> SystemExit:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    return SystemExit(f"audiolm-jax semantic {action}: error: {message}")


# --- fit-kmeans ------------------------------------------------------------------------------

def _run_fit(args: argparse.Namespace) -> int:
    import dataclasses

    from audiolm_jax import config as gin_flags
    # Imported before the gin flags are parsed: parsing locks gin's registry of configurables.
    from audiolm_jax.eval.semantic_abx import choose_layer_by_abx
    from audiolm_jax.semantic.fit import KMeansFitConfig, fit_tokenizer_from_checkpoint

    try:
        if args.gin_files or args.gin_bindings:
            gin_flags.parse_gin(args.gin_files, args.gin_bindings)
        overrides = {k: v for k, v in (("layer", args.layer), ("clusters", args.clusters),
                                       ("max_hours", args.max_hours), ("layout", args.layout))
                     if v is not None}
        fit_config = dataclasses.replace(KMeansFitConfig(), **overrides)
        choose_layer = None
        if args.select_layer_on is not None:
            if args.layer is not None:
                raise ValueError("--layer and --select-layer-on exclude each other: give a "
                                 "layer, or a split to choose it on")
            choose_layer = functools.partial(choose_layer_by_abx, args.corpus,
                                             args.select_layer_on,
                                             max_items=args.select_layer_items)
        report = fit_tokenizer_from_checkpoint(args.checkpoint, args.corpus, args.out, args.split,
                                               fit_config, step=args.step,
                                               choose_layer=choose_layer)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise _fail("fit-kmeans", e) from e
    print(json.dumps({k: report[k] for k in ("step", "audio", "empty_clusters", "cluster_perplexity")}
                     | {"layer": report["config"]["layer"]}))
    return 0


# --- tokenize --------------------------------------------------------------------------------

def _audio_files(root: Path) -> list[Path]:
    from audiolm_jax.data.corpus import is_audio_name

    return sorted(p for p in root.rglob("*") if p.is_file() and is_audio_name(p.name))


def _write_ids(path: Path, ids) -> None:
    import os

    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(ids, np.int32), allow_pickle=False)
    os.replace(tmp, path)


def _describe(tokenizer, tokenizer_dir: Path) -> dict:
    return {"format": IDS_FORMAT, "tokenizer": str(tokenizer_dir.resolve()),
            "num_clusters": tokenizer.num_clusters, "layer": tokenizer.layer, "frame_rate_hz": 25,
            "dtype": "int32"}


def _tokenize_file(tokenizer, tokenizer_dir: Path, source: Path, out: Path, bucket: int) -> None:
    from audiolm_jax.audio import load_audio
    from audiolm_jax.semantic.tokenizer import bucketed_ids

    if out.suffix != ".npy":
        raise ValueError(f"--out {out}: a single input file writes one .npy; name it OUT.npy")
    sidecar = out.with_suffix(".json")
    if sidecar.exists():
        try:
            ours = json.loads(sidecar.read_text()).get("format") == IDS_FORMAT
        except (ValueError, AttributeError):
            ours = False
        if not ours:
            raise ValueError(f"{sidecar} exists and is not an ids sidecar (corpus metadata?); "
                             f"refusing to overwrite it: choose another --out")
    wav = load_audio(source)
    try:
        ids = bucketed_ids(tokenizer, wav, bucket)
    except ValueError as e:
        raise ValueError(f"{source}: {e}; it has no 25 Hz frame to tokenize") from None
    _write_ids(out, ids)
    meta = {**_describe(tokenizer, tokenizer_dir), "source": str(source.resolve()),
            "samples": int(wav.shape[0]), "frames": int(ids.shape[0])}
    sidecar.write_text(json.dumps(meta, indent=2, sort_keys=True))
    print(f"{source} -> {out}: {ids.shape[0]} ids")


def _tokenize_dir(tokenizer, tokenizer_dir: Path, source: Path, out: Path, bucket: int) -> None:
    from audiolm_jax.audio import AudioError, load_audio
    from audiolm_jax.semantic.tokenizer import bucketed_ids

    files = _audio_files(source)
    if not files:
        raise ValueError(f"{source}: no audio files (.flac, .wav, .ogg, .opus) under it")
    if out.suffix == ".npy":
        raise ValueError(f"--out {out}: a directory input writes a directory of .npy files; "
                         f"drop the .npy suffix")
    start = time.perf_counter()
    written, skipped = {}, {}
    for path in files:
        rel = path.relative_to(source)
        try:
            wav = load_audio(path)
            ids = bucketed_ids(tokenizer, wav, bucket)
        except (AudioError, ValueError) as e:  # one bad file never stops the others
            skipped[str(rel)] = str(e)
            print(f"skipping {path}: {e}", file=sys.stderr)
            continue
        target = rel.with_suffix(".npy")
        _write_ids(out / target, ids)
        written[str(target)] = {"source": str(rel), "samples": int(wav.shape[0]),
                                "frames": int(ids.shape[0])}
    manifest = {**_describe(tokenizer, tokenizer_dir), "input": str(source.resolve()),
                "files": written, "skipped": skipped,
                "seconds": round(time.perf_counter() - start, 3)}
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    print(f"{source} -> {out}: {len(written)} files tokenized, {len(skipped)} skipped "
          f"(see {out / MANIFEST})")


def _run_tokenize(args: argparse.Namespace) -> int:
    from audiolm_jax.audio import AudioError
    from audiolm_jax.semantic.tokenizer import FRAME_SAMPLES, SemanticTokenizer

    source, out, tokenizer_dir = Path(args.input), Path(args.out), Path(args.tokenizer)
    try:
        bucket = round(args.bucket_seconds * 16000)
        if bucket <= 0 or bucket % FRAME_SAMPLES:
            raise ValueError(f"--bucket-seconds {args.bucket_seconds}: must be a positive multiple "
                             f"of 0.04 s (one 25 Hz frame), e.g. 2.0")
        if not source.exists():
            raise FileNotFoundError(f"{source}: no such audio file or directory")
        tokenizer = SemanticTokenizer.load(tokenizer_dir)
        if source.is_dir():
            _tokenize_dir(tokenizer, tokenizer_dir, source, out, bucket)
        else:
            _tokenize_file(tokenizer, tokenizer_dir, source, out, bucket)
    except (FileNotFoundError, ValueError, AudioError) as e:
        raise _fail("tokenize", e) from e
    return 0
