"""The main job on the built-in small world (`make demo`).

Each step skips when its outputs already exist, so a rerun (or a run after a kill) picks up
where it stopped.
"""
from __future__ import annotations

import os
import time
from pathlib import Path


def summary_lines(name: str, summary: dict) -> list[str]:
    """A few readable lines from a corpus summary (the whole of it is in summary.json)."""
    hours = summary["hours"]
    lines = [f"{name}: {hours['total']:.2f} h -- " + ", ".join(
        f"{split} {h:.2f} h" for split, h in hours.items() if split != "total")]
    if "utterances" in summary:
        voices = summary["voices"]
        lines.append(f"  {summary['utterances']['total']} utterances; {voices['voices']} voices "
                     f"({voices['base_voices']} base voices, {voices['variants']} variants, "
                     f"{voices['source_speakers']} source speakers); held-out voices: "
                     f"{', '.join(voices['by_split'].get('heldout_voices', []))}")
    if "composers" in summary:
        pieces = {split: sum(c.values()) for split, c in summary["composers"].items()}
        lines.append(f"  pieces: {pieces}; soundfonts: {', '.join(summary['soundfonts'])}")
    skipped = summary.get("skipped", {})
    lines.append(f"  skipped: {skipped.get('total', 0)} {skipped.get('counts', {})}")
    build = summary.get("build", {})
    if build:
        lines.append(f"  build: {build.get('seconds', 0):.0f} s on {build.get('workers')} workers "
                     f"({build.get('built')} built, {build.get('reused')} reused)")
    return lines


def run_demo(out_dir: str = "outputs/demo", hours: float = 0.55, seed: int = 0,
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
        print(f"[demo] {name} done in {time.time() - start:.0f} s; summary in "
              f"{world / name / 'summary.json'}", flush=True)
        print("\n".join(summary_lines(name, summary)), flush=True)
    return results
