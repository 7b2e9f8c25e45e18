"""Gin configuration, T5X style: `--gin_file=F` (repeatable) and `--gin.NAME=VALUE` overrides.

Experiments are gin files under the repository's `gin/` folder (models/, experiments/, runs/,
training/); `--gin_file` accepts a path or a name relative to that folder. Overrides are applied
after every file, in command-line order, so the last word wins, as in T5X.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import gin

GIN_DIR = Path(__file__).resolve().parent.parent / "gin"


def split_gin_flags(argv: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Splits argv into (gin_files, gin_bindings, rest).

    Accepts `--gin_file=F`, `--gin_file F`, `--gin.NAME=VALUE` and `--gin.NAME VALUE`; the
    binding becomes `NAME = VALUE` (VALUE is gin syntax: `'a string'`, `3`, `@fn()`, `%MACRO`).
    """
    files: list[str] = []
    bindings: list[str] = []
    rest: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--gin_file" or arg.startswith("--gin_file="):
            if "=" in arg:
                files.append(arg.split("=", 1)[1])
            else:
                if i + 1 >= len(args):
                    raise ValueError("--gin_file needs a value, e.g. --gin_file=experiments/small_world_codec.gin")
                files.append(args[i + 1])
                i += 1
        elif arg.startswith("--gin."):
            body = arg[len("--gin."):]
            if "=" in body:
                name, value = body.split("=", 1)
            else:
                if i + 1 >= len(args):
                    raise ValueError(f"{arg} needs a value: write --gin.NAME=VALUE")
                name, value = body, args[i + 1]
                i += 1
            if not name:
                raise ValueError(f"bad gin override {arg!r}: write --gin.NAME=VALUE, e.g. --gin.train.num_steps=100")
            bindings.append(f"{name} = {value}")
        else:
            rest.append(arg)
        i += 1
    return files, bindings, rest


def resolve_gin_file(name: str) -> str:
    """A gin file by path, or by name relative to the repository's gin/ folder (.gin optional)."""
    candidates = [Path(name), GIN_DIR / name, GIN_DIR / f"{name}.gin"]
    for path in candidates:
        if path.is_file():
            return str(path)
    raise FileNotFoundError(
        f"gin file {name!r} not found (looked at {', '.join(str(c) for c in candidates)}); "
        f"pass a path or a name under {GIN_DIR}, e.g. --gin_file=training/defaults.gin")


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str], finalize: bool = True) -> None:
    """Parses gin files then overrides; includes inside files resolve against gin/ too."""
    gin.add_config_file_search_path(str(GIN_DIR))
    # gin tries each include against the working directory first and logs a spurious ERROR
    # ("Path not found") before finding it under gin/; a real miss still raises.
    quiet = _DropMessages("Path not found")
    logging.getLogger().addFilter(quiet)
    try:
        gin.parse_config_files_and_bindings(
            [resolve_gin_file(f) for f in gin_files], list(gin_bindings),
            finalize_config=finalize, skip_unknown=False)
    finally:
        logging.getLogger().removeFilter(quiet)


class _DropMessages(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def save_operative_config(directory: str | os.PathLike, filename: str = "config.gin") -> Path:
    """Writes the operative config (what the run actually used) beside checkpoints."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    tmp = path.with_suffix(".tmp")
    tmp.write_text(gin.operative_config_str())
    os.replace(tmp, path)
    return path
