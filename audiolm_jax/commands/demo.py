"""`audiolm-jax demo`: the main job on the built-in small world."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the main job on the built-in small world",
        description="The whole AudioLM pipeline on the built-in small world, sized for two CPU "
                    "cores (~15 min): builds the corpora (0.5 h of speech and of piano), trains a "
                    "tiny codec and w2v-BERT, fits k-means, exports the codec, tokenizes, trains "
                    "the three stage LMs, continues held-out prompts and writes "
                    "OUT/report.html. Finished steps are skipped (markers in OUT/.done/).")
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--hours", type=float, default=0.55,
                   help="target hours of speech and of piano (default 0.55: builds land within a "
                        "few percent of the target, and the demo promises at least 0.5 h of each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from audiolm_jax.demo import run_demo

    from audiolm_jax.demo.runner import DemoStepError

    try:
        run_demo(out_dir=args.out, hours=args.hours, seed=args.seed, workers=args.workers)
    except DemoStepError as e:
        print(f"audiolm-jax demo: error: {e}", flush=True)
        return 1
    return 0
