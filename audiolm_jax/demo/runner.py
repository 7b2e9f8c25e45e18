"""Runs named steps once: a done-marker per step, wall time per step, a summary at the end.

A step whose marker exists is skipped (its recorded time and info are kept), so a rerun after a
kill or a finished run picks up where it stopped. Each step's own tool resumes too (the trainer
from its newest checkpoint, the tokenizer from its finished shards).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable


class DemoStepError(RuntimeError):
    """A demo step failed; the message names the step, its log and how to rerun."""


class StepRunner:
    def __init__(self, done_dir: str | os.PathLike, *, total: int):
        self.done_dir = Path(done_dir)
        self.done_dir.mkdir(parents=True, exist_ok=True)
        self.total = total
        self.records: dict[str, dict[str, Any]] = {}
        self._start = time.time()

    def marker(self, name: str) -> Path:
        return self.done_dir / f"{name}.json"

    def run(self, name: str, title: str, fn: Callable[[], dict | None]) -> dict[str, Any]:
        """Runs `fn` unless `name` is done; returns its info dict (recorded in the marker)."""
        index = len(self.records) + 1
        marker = self.marker(name)
        if marker.is_file():
            record = json.loads(marker.read_text())
            record["skipped"] = True
            self.records[name] = record
            print(f"[demo {index}/{self.total}] {title}: done before ({record['seconds']:.0f} s); "
                  f"skipped (delete {marker} to redo)", flush=True)
            return record.get("info", {})
        print(f"[demo {index}/{self.total}] {title} ...", flush=True)
        start = time.time()
        info = fn() or {}
        seconds = time.time() - start
        record = {"title": title, "seconds": seconds, "info": info}
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, marker)
        record["skipped"] = False
        self.records[name] = record
        print(f"[demo {index}/{self.total}] {title}: {seconds:.0f} s "
              f"(demo so far {time.time() - self._start:.0f} s)", flush=True)
        return info

    def summary_lines(self) -> list[str]:
        width = max((len(r["title"]) for r in self.records.values()), default=10)
        lines = ["step".ljust(width) + "  seconds"]
        for record in self.records.values():
            note = "  (earlier run)" if record["skipped"] else ""
            lines.append(f"{record['title'].ljust(width)}  {record['seconds']:7.1f}{note}")
        ran = sum(r["seconds"] for r in self.records.values() if not r["skipped"])
        lines.append(f"{'this run, wall'.ljust(width)}  {time.time() - self._start:7.1f}  "
                     f"(steps run now: {ran:.1f} s)")
        return lines

    def timings(self) -> dict[str, dict[str, Any]]:
        return {name: {"title": r["title"], "seconds": r["seconds"], "skipped": r["skipped"]}
                for name, r in self.records.items()}
