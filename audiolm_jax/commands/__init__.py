"""The `audiolm-jax` subcommands, one module each; each exposes `register(subparsers)`.

Command modules import their heavy dependencies (JAX, the models) inside the handler so that
`audiolm-jax --help` stays instant.
"""
import importlib

# In the order `--help` lists them, which is the order of the pipeline.
COMMAND_MODULES = ("corpus", "train", "compile", "export", "codec", "semantic", "tokenize",
                   "generate", "eval", "demo")


def register_all(subparsers) -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"audiolm_jax.commands.{name}").register(subparsers)
