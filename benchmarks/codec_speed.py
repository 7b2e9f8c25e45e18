"""Codec speed: jitted SoundStream encode+decode (and each alone) as a real-time factor, on the
default backend's first device, at several batch sizes.

    python benchmarks/codec_speed.py --gin_file models/codec_paper_speech --random-init \\
        --seconds 10 --batch-sizes 1 64 --out results/codec_speed.json

RTF = seconds of audio processed / wall seconds, from the median of `--repeats` timed calls after
compilation and `--warmup` calls; inputs are already on the device and every call ends with
block_until_ready. Weights do not change the work done, so `--random-init` is the usual source;
`--checkpoint DIR` times a trained model. The output file keeps one run per backend (cpu, gpu,
tpu): running on a GPU machine adds its run beside an earlier CPU one.
Imports only jax, flax, numpy and the codec (no TensorFlow, no librosa).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from audiolm_jax.codec import bitrate_kbps
from audiolm_jax.codec.soundstream import SoundStream
from audiolm_jax.config import split_gin_flags
from audiolm_jax.eval.codec_model import build_codec
from audiolm_jax.eval.run_info import command_line, machine_info, utc_now, write_json

PROGRAMS = ("encode_decode", "encode", "decode")
GPU_BATCHED_TARGET_RTF = 1000.0  # the issue's target: batched encode+decode on one GPU


def codec_programs(model: SoundStream, num_quantizers: int, device: jax.Device
                   ) -> tuple[dict[str, Callable], Any, NamedSharding]:
    """({name: jitted fn(state, x)}, the model state on `device`, the batch sharding).

    encode: wav `[batch, samples]` -> codes `[batch, frames, q]`; decode: codes -> wav;
    encode_decode: wav -> wav. One-device mesh with axis "batch"; the state is replicated.
    """
    mesh = jax.make_mesh((1,), ("batch",), axis_types=(AxisType.Auto,), devices=[device])
    replicated, batch = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
    graphdef, state = nnx.split(model)

    def encode(state, wav):
        return nnx.merge(graphdef, state).encode(wav, num_quantizers)

    def decode(state, codes):
        return nnx.merge(graphdef, state).decode(codes)

    def encode_decode(state, wav):
        codec = nnx.merge(graphdef, state)
        return codec.decode(codec.encode(wav, num_quantizers))

    functions = {"encode_decode": encode_decode, "encode": encode, "decode": decode}
    jitted = {name: jax.jit(fn, in_shardings=(replicated, batch), out_shardings=batch)
              for name, fn in functions.items()}
    return jitted, jax.device_put(state, replicated), batch


def time_program(fn: Callable, args: Sequence[Any], warmup: int, repeats: int) -> dict[str, Any]:
    """Compile once, call `warmup` times, then time `repeats` calls (each blocked until ready)."""
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return {"compile_s": compile_s, "median_s": statistics.median(times), "min_s": min(times),
            "times_s": times}


def measure_speed(model: SoundStream, *, seconds: float = 10.0,
                  batch_sizes: Sequence[int] = (1, 64), num_quantizers: int | None = None,
                  programs: Sequence[str] = PROGRAMS, warmup: int = 2, repeats: int = 10,
                  device: jax.Device | None = None, seed: int = 0) -> dict[str, Any]:
    """Times `programs` on `seconds` of audio per example at each batch size on `device`
    (default: the default backend's first device). Returns {"batches": {B: {program: timing
    with "rtf"}}, "rtf": {"batch_B": encode_decode RTF}, and what was measured}."""
    unknown = [p for p in programs if p not in PROGRAMS]
    if unknown:
        raise ValueError(f"unknown program(s) {unknown}; choose from {list(PROGRAMS)}")
    if repeats < 1 or warmup < 0 or seconds <= 0 or not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"need repeats >= 1, warmup >= 0, seconds > 0 and batch sizes >= 1; got "
                         f"repeats={repeats}, warmup={warmup}, seconds={seconds}, "
                         f"batch_sizes={list(batch_sizes)}")
    q = model.num_quantizers if num_quantizers is None else num_quantizers
    if not 1 <= q <= model.num_quantizers:
        raise ValueError(f"num_quantizers={q} is out of range 1..{model.num_quantizers}")
    device = device or jax.devices()[0]
    frames = max(1, int(round(seconds * model.config.frame_rate)))
    samples = frames * model.hop_length
    audio_seconds = samples / model.sample_rate  # whole frames: may differ slightly from `seconds`
    jitted, state, sharding = codec_programs(model, q, device)
    rng = np.random.default_rng(seed)
    batches: dict[str, dict[str, Any]] = {}
    for size in batch_sizes:
        wav = np.clip(rng.normal(0.0, 0.1, (size, samples)), -1, 1).astype(np.float32)
        wav = jax.device_put(wav, sharding)
        batches[str(size)] = {}
        for name in programs:
            # decode's input is codes; made after encode is timed, so its compile is counted.
            x = jitted["encode"](state, wav) if name == "decode" else wav
            timing = time_program(jitted[name], (state, x), warmup, repeats)
            timing["rtf"] = size * audio_seconds / timing["median_s"]
            batches[str(size)][name] = timing
            del x
        del wav
    return {
        "backend": jax.default_backend(), "device": device.device_kind,
        "compute_dtype": model.config.compute_dtype,
        "default_matmul_precision": jax.config.jax_default_matmul_precision,
        "num_quantizers": q,
        "kbps": bitrate_kbps(q, model.codebook_size, model.config.frame_rate),
        "audio_seconds_per_example": audio_seconds, "warmup": warmup, "repeats": repeats,
        "timing": "median wall time of jitted calls on device-resident inputs, blocked until ready",
        "batches": batches,
        "rtf": {f"batch_{b}": batches[str(b)]["encode_decode"]["rtf"]
                for b in batch_sizes if "encode_decode" in programs},
    }


def merge_runs(previous: dict | None, run: dict) -> dict[str, Any]:
    """The results file: one run per backend, this one replacing an earlier run on its backend."""
    runs = dict((previous or {}).get("runs", {}))
    runs[run["backend"]] = run
    rtf = {f"{backend}_{key}": value for backend, r in sorted(runs.items())
           for key, value in r["rtf"].items()}
    gpu_batched = [v for k, v in runs.get("gpu", {}).get("rtf", {}).items() if k != "batch_1"]
    target = {"gpu_batched_rtf_at_least": GPU_BATCHED_TARGET_RTF,
              "met": (max(gpu_batched) >= GPU_BATCHED_TARGET_RTF) if gpu_batched else None}
    return {"benchmark": "codec_speed", "rtf": rtf, "target": target, "runs": runs}


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str], list[str]]:
    gin_files, gin_bindings, rest = split_gin_flags(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--random-init", action="store_true", help="random weights (same speed)")
    source.add_argument("--checkpoint", help="codec checkpoint directory (the trainer's)")
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per example")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--num-quantizers", type=int, default=None, help="default: all (6 kbps)")
    parser.add_argument("--programs", nargs="+", default=list(PROGRAMS), choices=PROGRAMS)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/codec_speed.json")
    args = parser.parse_args(rest)
    if not gin_files:
        parser.error("pass the codec's gin config, e.g. --gin_file models/codec_paper_speech")
    return args, gin_files, gin_bindings


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, gin_files, gin_bindings = parse_args(argv)
    model, source = build_codec(gin_files, gin_bindings, checkpoint=args.checkpoint,
                                step=args.step, seed=args.seed)
    run = measure_speed(model, seconds=args.seconds, batch_sizes=args.batch_sizes,
                        num_quantizers=args.num_quantizers, programs=args.programs,
                        warmup=args.warmup, repeats=args.repeats, seed=args.seed)
    run.update(command=command_line(argv, __file__), date=utc_now(), machine=machine_info(),
               model=source)
    previous = None
    if os.path.isfile(args.out):
        with open(args.out) as f:
            previous = json.load(f)
        if previous.get("benchmark") != "codec_speed":
            raise ValueError(f"{args.out} is not a codec_speed result (benchmark="
                             f"{previous.get('benchmark')!r}); pass another --out")
    result = merge_runs(previous, run)
    write_json(args.out, result)
    print(json.dumps({"backend": run["backend"], "device": run["device"], "rtf": run["rtf"]}))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
