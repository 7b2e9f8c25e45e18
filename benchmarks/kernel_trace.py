"""Device-kernel time from a JAX profiler trace, summed by kernel name and by category.

    with jax.profiler.trace(directory, create_perfetto_trace=True):
        ...  # the work, repeated `steps` times
    kernel_summary(directory, steps)

Used by benchmarks/lm_step_profile.py (what a training step spends its time on) and
benchmarks/generate.py --profile (kernels per decoding step: launch-bound or not).
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os

# Kernel-name patterns -> category, first match wins (cuDNN/cuBLAS/XLA kernel names).
CATEGORIES = (("convolution (cuDNN)", ("conv", "implicit_gemm", "dgrad", "wgrad")),
              ("fft (cuFFT)", ("fft",)),
              ("attention (cuDNN fmha)", ("fmha", "flash", "cudnn")),
              ("matmul (cuBLAS/cutlass)", ("gemm", "cutlass", "cublas", "sm90_xmma", "nvjet")),
              ("random bits", ("threefry", "rng", "philox", "random")),
              ("reduction", ("reduce",)),
              ("scatter/gather", ("scatter", "gather")),
              ("copy/transpose", ("copy", "transpose", "memcpy", "memset")),
              ("fusion (elementwise)", ("fusion", "loop", "input")))


def kernel_summary(profile_dir: str, steps: int = 3, top: int = 25,
                   span_prefix: str | None = None) -> dict:
    """Sum device-kernel time by name and category from the perfetto trace of `steps` steps.

    With `span_prefix`, kernels are also summed per host span whose name starts with it (e.g.
    the generation pipeline's `audiolm/<stage>` annotations) under "by_span": a kernel belongs
    to the span its start lies in (the trace puts host and device on one clock, and each
    stage waits for its results before its span ends); spans of one name are summed."""
    paths = glob.glob(os.path.join(profile_dir, "**", "*.trace.json.gz"), recursive=True)
    if not paths:
        return {"error": f"no perfetto trace under {profile_dir}"}
    with gzip.open(paths[0]) as f:
        events = json.load(f)
    events = events.get("traceEvents", events) if isinstance(events, dict) else events
    device_pids = {e["pid"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
                   and "/device:GPU" in str(e.get("args", {}).get("name", ""))}
    kernels = [e for e in events if e.get("ph") == "X" and e.get("pid") in device_pids]
    summary = _summarise(kernels, steps, top)
    if span_prefix:
        spans = [e for e in events if e.get("ph") == "X" and e.get("pid") not in device_pids
                 and str(e.get("name", "")).startswith(span_prefix)]
        inside = collections.defaultdict(list)   # a span name's kernels, over all its spans
        for span in spans:
            begin, end = float(span["ts"]), float(span["ts"]) + float(span.get("dur", 0))
            inside[span["name"][len(span_prefix):]] += [
                k for k in kernels if begin <= float(k.get("ts", -1)) < end]
        summary["by_span"] = {name: _summarise(found, steps, min(top, 10))
                              for name, found in inside.items()}
    return summary


def _summarise(kernels: list[dict], steps: int, top: int) -> dict:
    by_name, by_category = collections.Counter(), collections.Counter()
    for e in kernels:
        name, dur = e.get("name", "?"), float(e.get("dur", 0)) / 1e3 / steps  # ms per step
        by_name[name] += dur
        lowered = name.lower()
        category = next((c for c, keys in CATEGORIES if any(k in lowered for k in keys)), "other")
        by_category[category] += dur
    return {"device_ms_per_step": sum(by_category.values()), "kernels_per_step": len(kernels) / steps,
            "ms_per_step_by_category": dict(by_category.most_common()),
            "top_kernels_ms_per_step": dict(by_name.most_common(top))}
