"""`audiolm-jax`: one command per step of the AudioLM pipeline.

    audiolm-jax corpus speech --out data/world/speech --hours 0.5
    audiolm-jax corpus piano  --out data/world/piano  --hours 0.5
    audiolm-jax train --gin_file=experiments/... --gin.train.num_steps=100
    audiolm-jax demo

Heavy imports (JAX, TensorFlow-free data code) happen inside each command so `--help` is instant.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from audiolm_jax import commands, config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="audiolm-jax",
        description="AudioLM in JAX: build corpora, train tokenizers and stage LMs, tokenize, generate, "
                    "evaluate. Every command takes gin flags where it trains: --gin_file=F --gin.NAME=VALUE.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.register_all(sub)
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
