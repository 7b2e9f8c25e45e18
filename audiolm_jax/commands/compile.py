"""`audiolm-jax compile`: ahead-of-time compile a train step for a mesh or TPU topology."""
from __future__ import annotations

import argparse

from audiolm_jax import config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compile", help="compile a train step ahead of time and print memory per device",
        description="Lowers and compiles one train step on abstract shapes (nothing is allocated) "
                    "and prints per-device memory, so a paper-size config can be checked for fit "
                    "before the hardware is at hand. Bind compile_train_step.objective, .batch, "
                    ".mesh_config and optionally .topology (a TPU topology such as 'v5e:4x4'; needs "
                    "libtpu) in gin, e.g. --gin_file=runs/aot_semantic_paper.")
    p.set_defaults(func=_run_compile, takes_gin=True)


def _run_compile(args: argparse.Namespace) -> int:
    from audiolm_jax.training import aot

    config.parse_gin(args.gin_files, args.gin_bindings)
    report = aot.compile_train_step()
    return 0 if report.fits is not False else 4
