"""`audiolm-jax`: one command per step of the AudioLM pipeline.

    audiolm-jax corpus speech --out data/world/speech --hours 0.5
    audiolm-jax corpus piano  --out data/world/piano  --hours 0.5
    audiolm-jax train --gin_file=experiments/... --gin.train.num_steps=100
    audiolm-jax demo

Heavy imports (JAX, TensorFlow-free data code) happen inside each command so `--help` is instant.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from audiolm_jax import config


def _add_corpus(sub: argparse._SubParsersAction) -> None:
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


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model from a gin experiment (T5X-style flags)",
        description="Train any model (codec, w2v-BERT, a stage LM) through the sharded trainer core. "
                    "Configure with --gin_file=FILE (repeatable; a path or a name under gin/) and "
                    "--gin.NAME=VALUE overrides, e.g. --gin.train.num_steps=1000.")
    p.set_defaults(func=_run_train, takes_gin=True)


def _run_train(args: argparse.Namespace) -> int:
    from audiolm_jax.training import trainer

    config.parse_gin(args.gin_files, args.gin_bindings)
    trainer.train()
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the main job on the built-in small world",
        description="Builds the small world (0.5 h speech, 0.5 h piano) under --out and prints its "
                    "summaries. Steps whose outputs exist are skipped.")
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--hours", type=float, default=0.5, help="hours of speech and of piano (default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from audiolm_jax.demo import run_demo

    run_demo(out_dir=args.out, hours=args.hours, seed=args.seed, workers=args.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiolm-jax",
        description="AudioLM in JAX: build corpora, train tokenizers and stage LMs, tokenize, generate, "
                    "evaluate. Every command takes gin flags where it trains: --gin_file=F --gin.NAME=VALUE.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_corpus(sub)
    _add_train(sub)
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    gin_files, gin_bindings, rest = config.split_gin_flags(argv)
    args = build_parser().parse_args(rest)
    if (gin_files or gin_bindings) and not getattr(args, "takes_gin", False):
        raise SystemExit(f"audiolm-jax {args.command}: takes no gin flags (got {gin_files + gin_bindings})")
    args.gin_files, args.gin_bindings = gin_files, gin_bindings
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
