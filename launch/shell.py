"""Shell rendering: argv lists become bash text only through shlex.join / shlex.quote.

A launch plan is a list of Steps (argv, plus where to tee their output). The dry-run prints
`bash_script(steps)`; a real launch runs exactly that text with `bash -c`, so what is printed is
what runs. Commands for remote workers are scripts too, handed over as one argv element
(`gcloud ... --command=...`): quoted once for the local shell, parsed by the worker's shell.
"""
from __future__ import annotations

import dataclasses
import shlex
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class Step:
    """One local command. `tee`: also append its stdout+stderr to this file."""
    argv: tuple[str, ...]
    tee: str | None = None
    comment: str = ""

    def render(self) -> str:
        line = shlex.join(self.argv)
        if self.tee:
            line += " 2>&1 | tee -a " + shlex.quote(self.tee)
        return line


@dataclasses.dataclass(frozen=True)
class Raw:
    """Bash that is not one command (a wait loop); built by its caller from quoted parts."""
    text: str
    comment: str = ""

    def render(self) -> str:
        return self.text


def step(*argv: str, tee: str | None = None, comment: str = "") -> Step:
    bad = [a for a in argv if not isinstance(a, str)]
    if bad:
        raise TypeError(f"argv elements must be str, got {bad!r} in {argv!r}")
    return Step(tuple(argv), tee, comment)


def remote_command(lines: Sequence[str]) -> str:
    """The value of `--command=`: a script for the worker's login shell (bash on Cloud TPU VMs),
    with errexit and pipefail so a failing `train | tee` fails the step. One argv element; the
    local rendering quotes it once more."""
    return "\n".join(["set -euo pipefail", *lines])


def bash_script(steps: Sequence[Step | Raw], header: Sequence[str] = ()) -> str:
    """A complete bash script: shebang, header comments, strict mode, one step per paragraph."""
    out = ["#!/usr/bin/env bash"]
    out += [f"# {h}" if h else "#" for item in header for h in str(item).splitlines() or [""]]
    out += ["set -euo pipefail", ""]
    for s in steps:
        if s.comment:
            out += [f"# {c}" if c else "#" for c in s.comment.splitlines()]
        out += [s.render(), ""]
    return "\n".join(out)
