"""`audiolm-jax export`: a trainer checkpoint -> a frozen, checksummed, pickle-free export."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint's model as checksummed .npz shards",
        description="Writes the model variables of a trainer checkpoint (no optimizer state) as "
                    ".npz shards under a size cap with a SHA-256 manifest and the operative gin "
                    "config: the format to move, share or commit a frozen model.")
    p.add_argument("--checkpoint", required=True, help="the run's checkpoints/ directory")
    p.add_argument("--out", required=True, help="export directory (replaced)")
    p.add_argument("--prefix", default=None,
                   help="export only variables under this module path, e.g. 'generator'")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    p.add_argument("--exclude", nargs="*", default=(),
                   help="drop variables with these names (training-only state, e.g. embed_sum)")
    p.add_argument("--float-dtype", default=None, help="cast floating arrays, e.g. bfloat16")
    p.add_argument("--keep-float32", nargs="*", default=(),
                   help="names exempt from --float-dtype, e.g. codebooks")
    p.add_argument("--shard-mb", type=float, default=15.0, help="shard size cap in MiB")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from audiolm_jax.training.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out, prefix=args.prefix, step=args.step,
                            shard_bytes=int(args.shard_mb * (1 << 20)), exclude=args.exclude,
                            float_dtype=args.float_dtype, keep_float32=args.keep_float32)
    print(f"exported {args.checkpoint} -> {out}")
    return 0
