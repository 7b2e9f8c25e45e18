"""The demo's first step: the built-in small world (speech and piano corpora) and its summary."""
from __future__ import annotations

import os
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


def build_world(name: str, world: Path, hours: float = 0.55, seed: int = 0,
                workers: int | None = None) -> dict:
    """Builds the small world's `name` ("speech" or "piano") under `world/name` (the builders
    reuse finished files) and prints its summary; returns the summary (also in summary.json)."""
    from audiolm_jax.data.piano_world import build_piano_world  # noqa: PLC0415
    from audiolm_jax.data.speech_world import build_speech_world  # noqa: PLC0415

    build = {"speech": build_speech_world, "piano": build_piano_world}[name]
    workers = workers or os.cpu_count() or 1
    root = Path(world) / name
    print(f"[demo] building the small world: {name} ({hours} h) -> {root}", flush=True)
    summary = build(str(root), hours=hours, seed=seed, workers=workers, progress=True)
    print("\n".join(summary_lines(name, summary)), flush=True)
    return {"hours": summary["hours"], "summary": str(root / "summary.json")}
