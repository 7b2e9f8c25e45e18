"""`audiolm-jax demo`: the main job on the built-in small world."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the main job on the built-in small world",
        description="Builds the small world (at least 0.5 h of speech and of piano) under --out "
                    "and prints its summaries. Steps whose outputs exist are skipped.")
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--hours", type=float, default=0.55,
                   help="target hours of speech and of piano (default 0.55: builds land within a "
                        "few percent of the target, and the demo promises at least 0.5 h of each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from audiolm_jax.demo import run_demo

    run_demo(out_dir=args.out, hours=args.hours, seed=args.seed, workers=args.workers)
    return 0
