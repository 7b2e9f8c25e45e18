"""Which JAX operations a kernel of a profile comes from, read from XLA's HLO dump.

A profiler trace names XLA's kernels (`input_reduce_fusion_59`, `gemm_fusion_dot_631`), not the
model code they compute. With the program compiled under
`XLA_FLAGS="--xla_dump_to=DIR --xla_dump_hlo_as_text"`, this prints for each name, in every
optimized module that has it, the fusion's result shape and the operations of its body with
their `op_name` metadata (the JAX call path: `.../while/body/.../dot_general`):

    python benchmarks/fusion_sources.py DIR input_reduce_fusion_59 loop_multiply_fusion_36
    python benchmarks/fusion_sources.py DIR --top-of generate_b1_profile.json --top 16

`--top-of` takes the costliest kernels of a `benchmarks/generate.py --profile` JSON.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re

_INSTR = re.compile(r"^\s*(ROOT\s+)?%(?P<name>[\w.\-]+) = (?P<shape>.*?) (?P<op>[\w\-]+)\(")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def computations(text: str) -> dict[str, list[str]]:
    """Computation name -> its instruction lines, from an HLO module's text."""
    comps, current = {}, None
    for line in text.splitlines():
        header = re.match(r"^(ENTRY\s+)?%([\w.\-]+) .*\{\s*$", line)
        if header:
            current = comps.setdefault(header.group(2), [])
        elif line.strip() == "}":
            current = None
        elif current is not None:
            current.append(line)
    return comps


def describe(text: str, fusion: str) -> list[str]:
    """Lines describing `fusion` in one module: its shape, then op kind and op_name per body op."""
    return _describe(computations(text), fusion)


def _describe(comps: dict[str, list[str]], fusion: str) -> list[str]:
    for lines in comps.values():
        for line in lines:
            m = _INSTR.match(line)
            if not m or m.group("name") != fusion:
                continue
            called = _CALLS.search(line)
            body = [(b, text) for text in (comps.get(called.group(1), []) if called else [])
                    if (b := _INSTR.match(text))]
            inputs = [b.group("shape") for b, _ in body if b.group("op") == "parameter"]
            out = [f"{fusion}: {m.group('shape')} {m.group('op')} of {', '.join(inputs) or '-'}"]
            for b, text in body:
                if b.group("op") in ("parameter", "constant", "bitcast", "get-tuple-element"):
                    continue
                op_name = _OP_NAME.search(text)
                out.append(f"  {b.group('op')} {b.group('shape')}"
                           + (f"  <- {op_name.group(1)}" if op_name else ""))
            return out
    return []


def top_kernels(profile_json: str, top: int) -> list[str]:
    """The `top` costliest kernel names of each run in a `generate.py --profile` JSON."""
    with open(profile_json) as f:
        runs = json.load(f)["runs"].values()
    return [name for run in runs if "kernels" in run
            for name in list(run["kernels"]["top_kernels_ms_per_step"])[:top]]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump_dir")
    parser.add_argument("names", nargs="*")
    parser.add_argument("--top-of", help="a generate.py --profile JSON: take its costliest kernels")
    parser.add_argument("--top", type=int, default=16)
    args = parser.parse_args(argv)
    names = list(dict.fromkeys(args.names + (top_kernels(args.top_of, args.top) if args.top_of
                                             else [])))
    if not names:
        parser.error("name kernels, or give --top-of PROFILE_JSON")
    modules = sorted(glob.glob(os.path.join(args.dump_dir, "*after_optimizations.txt")))
    if not modules:
        raise SystemExit(f"fusion_sources: no *after_optimizations.txt under {args.dump_dir} "
                         "(compile with XLA_FLAGS='--xla_dump_to=DIR --xla_dump_hlo_as_text')")
    found = {name: [] for name in names}
    for path in modules:  # each module parsed once
        with open(path) as f:
            comps = computations(f.read())
        for name in names:
            if lines := _describe(comps, name):
                found[name].append(f"== {os.path.basename(path)}\n" + "\n".join(lines))
    for name in names:
        print("\n".join(found[name]) if found[name] else f"== {name}: in no module")

if __name__ == "__main__":
    main()
