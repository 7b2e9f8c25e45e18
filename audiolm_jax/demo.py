"""The main job on the built-in small world (`make demo`).

Each step skips when its outputs already exist, so a rerun (or a run after a kill) picks up
where it stopped.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path


def _summary_line(name: str, summary: dict) -> str:
    hours = summary.get("hours_total", summary.get("hours"))
    return f"{name}: {json.dumps(summary, sort_keys=True)[:2000]}" if hours is None else (
        f"{name}: {hours:.2f} h")


def run_demo(out_dir: str = "outputs/demo", hours: float = 0.5, seed: int = 0,
             workers: int | None = None) -> dict:
    """Builds the small world under `out_dir/world` and prints its summaries."""
    from audiolm_jax.data.piano_world import build_piano_world
    from audiolm_jax.data.speech_world import build_speech_world

    workers = workers or os.cpu_count() or 1
    world = Path(out_dir) / "world"
    results = {}
    for name, build in (("speech", build_speech_world), ("piano", build_piano_world)):
        start = time.time()
        print(f"[demo] building the small world: {name} ({hours} h) -> {world / name}", flush=True)
        summary = build(str(world / name), hours=hours, seed=seed, workers=workers, progress=True)
        results[name] = summary
        print(f"[demo] {name} summary ({time.time() - start:.0f} s):", flush=True)
        print(json.dumps(summary, indent=2), flush=True)
    return results
