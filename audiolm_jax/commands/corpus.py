"""`audiolm-jax corpus`: build the small world's speech and piano corpora."""
from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    corpus = sub.add_parser(
        "corpus", help="build a small-world corpus (speech or piano)",
        description="Build the built-in small world: real text (King James Bible) read by flite and "
                    "festival voices, or real scores (music21's corpus) rendered by fluidsynth. "
                    "Deterministic by seed; reruns skip what exists, so a killed build resumes.")
    kinds = corpus.add_subparsers(dest="kind", required=True)
    for kind, blurb in (("speech", "speech in the Libri-Light layout, with transcripts and phone timings"),
                        ("piano", "piano in a MAESTRO-like layout, with the MIDI beside each FLAC")):
        p = kinds.add_parser(kind, help=blurb, description=blurb)
        p.add_argument("--out", required=True, help="output root (created)")
        p.add_argument("--hours", type=float, default=0.5, help="hours of audio in all splits (default 0.5)")
        p.add_argument("--seed", type=int, default=0, help="seed: same seed, same bytes (default 0)")
        p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=_run_corpus)


def _run_corpus(args: argparse.Namespace) -> int:
    import os

    workers = args.workers or os.cpu_count() or 1
    if args.kind == "speech":
        from audiolm_jax.data.speech_world import build_speech_world as build
    else:
        from audiolm_jax.data.piano_world import build_piano_world as build
    summary = build(args.out, hours=args.hours, seed=args.seed, workers=workers, progress=not args.quiet)
    print(json.dumps(summary, indent=2))
    return 0
