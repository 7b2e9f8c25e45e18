"""What the small-world corpus builders (speech, piano) share.

- `parallel_map`: run a picklable function over tasks in worker processes (spawned, so a parent
  that already imported JAX is never forked), with a tqdm bar; results come back in task order,
  so the output never depends on the number of workers. An exception in a task becomes a
  `TaskFailed` result (counted as a skip), never the end of the build.
- atomic writers (JSON, text, bytes): a file appears complete or not at all, so a killed build
  leaves no half-written utterance behind, only missing ones that a rerun builds
  (`sweep_temp_files` removes the hidden temp files such a kill leaves).
- `recipe_digest` / `existing_output`: an utterance is reused on a rerun only if its audio
  header is a 16 kHz mono file of the recorded length and its JSON records the same recipe
  (everything that determines the output).
- `Skipped` bookkeeping and `skip_summary`; `build_record` and `write_summary` for
  `{root}/summary.json`.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Sequence

from tqdm import tqdm

from audiolm_jax.audio import SAMPLE_RATE, AudioError, audio_info

SUMMARY_FILE = "summary.json"
MAX_LISTED_SKIPS = 2000  # Keep summary.json readable on big builds; counts stay exact.


# ----------------------------------------------------------------------------- skips

@dataclasses.dataclass(frozen=True)
class Skipped:
    """An item left out of a corpus. `kind` is a short label for counts; `reason` is for people."""

    item: str
    kind: str
    reason: str


@dataclasses.dataclass(frozen=True)
class TaskFailed:
    """What `parallel_map` returns for a task whose function raised."""

    error: str


def skip_summary(skips: Sequence[Skipped]) -> dict:
    """{"total", "counts": {kind: n}, "items": [{"item", "kind", "reason"}...]} in input order."""
    listed = [dataclasses.asdict(s) for s in skips[:MAX_LISTED_SKIPS]]
    out = {"total": len(skips), "counts": dict(sorted(Counter(s.kind for s in skips).items())),
           "items": listed}
    if len(skips) > MAX_LISTED_SKIPS:
        out["items_not_listed"] = len(skips) - MAX_LISTED_SKIPS
    return out


# ----------------------------------------------------------------------------- determinism

def stable_hash(*parts: Any) -> int:
    """A 64-bit integer from `parts` that is the same on every machine and Python run."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def stable_fraction(*parts: Any) -> float:
    """`stable_hash` mapped to [0, 1): split and performer choices that need no shared RNG."""
    return stable_hash(*parts) / 2.0 ** 64


def recipe_digest(recipe: Mapping[str, Any]) -> str:
    """A short digest of everything that determines one output file (text, voice, seed, version)."""
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------- atomic files

def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` through a hidden temp file in the same directory and os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def dumps_json(obj: Any, compact: bool = False) -> str:
    """The JSON style of the corpora: sorted keys, UTF-8, trailing newline; indented unless
    `compact` (one line: per-utterance files with long phone lists)."""
    if compact:
        return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"
    return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def write_json_atomic(path: str, obj: Any, compact: bool = False) -> None:
    write_text_atomic(path, dumps_json(obj, compact))


def read_json(path: str) -> Any | None:
    """The parsed JSON at `path`, or None if it is missing or unreadable (treated as not built)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def existing_output(audio_path: str, json_path: str, digest: str,
                    extra_files: Iterable[str] = ()) -> dict | None:
    """The stored metadata of an already built utterance, or None if it must be (re)built.

    Valid means: the JSON parses and records `digest` as its recipe, the audio header is a
    16 kHz mono file whose length matches the JSON's duration, and `extra_files` exist. The JSON
    is written last, so a build killed mid-utterance never leaves a valid-looking pair.
    """
    meta = read_json(json_path)
    if not isinstance(meta, dict) or meta.get("recipe") != digest:
        return None
    if not all(os.path.isfile(p) for p in extra_files):
        return None
    try:
        info = audio_info(audio_path)
    except AudioError:
        return None
    duration = meta.get("duration")
    if (info.sample_rate != SAMPLE_RATE or info.channels != 1 or not isinstance(duration, (int, float))
            or abs(info.frames / SAMPLE_RATE - duration) > 1e-3):
        return None
    return meta


def sweep_temp_files(root: str, splits: Iterable[str]) -> int:
    """Delete the hidden `.NAME.XXXX.tmp` files that atomic writes leave when a build is killed
    mid-write (the corpus scanner ignores them; this keeps the tree clean). Returns the count."""
    removed = 0
    for split in splits:
        for dirpath, _, files in os.walk(os.path.join(root, split)):
            for f in files:
                if f.startswith(".") and f.endswith(".tmp"):
                    os.remove(os.path.join(dirpath, f))
                    removed += 1
    return removed


def require_tools(tools: Mapping[str, str]) -> None:
    """Raise naming every missing executable and how to install it ({name: install hint})."""
    missing = [f"{name} ({hint})" for name, hint in tools.items() if shutil.which(name) is None]
    if missing:
        raise RuntimeError(f"small-world builder needs these tools on PATH: {', '.join(missing)}. "
                           f"Fix: install them (`make tools` on Debian) and rerun")


# ----------------------------------------------------------------------------- parallel map

def parallel_map(fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int = 2, desc: str = "",
                 progress: bool = True, unit: str = "item",
                 until: Callable[[list[Any]], bool] | None = None) -> list[Any]:
    """[fn(task) for task in tasks] over `workers` spawned processes, in task order.

    `fn` must be a module-level function and the tasks picklable. A task that raises yields
    `TaskFailed("ExcType: message")` in its place. workers <= 1 runs in this process.
    With `until`, tasks are handed out in order (at most 4 * workers past the results finished
    in order) and the map stops once `until(results[:k])` holds for the k results finished in
    order so far; it returns that prefix, perhaps a little longer (callers that need an exact
    cut recompute it from the prefix).
    """
    bar = tqdm(total=None if until else len(tasks), desc=desc, unit=unit, disable=not progress,
               dynamic_ncols=True)
    try:
        if workers <= 1 or len(tasks) <= 1:
            results: list[Any] = []
            for task in tasks:
                results.append(_call(fn, task))
                bar.update(1)
                if until is not None and until(results):
                    break
            return results
        return _pool_map(fn, tasks, workers, bar, until)
    finally:
        bar.close()


def _pool_map(fn, tasks, workers, bar, until) -> list[Any]:
    done: dict[int, Any] = {}
    prefix = 0  # results[:prefix] are all finished
    window = 2 * workers  # tasks in flight: enough to keep every worker busy
    # With `until`, never run more than `lookahead` tasks past the finished prefix: one slow task
    # must not let the other workers race far beyond where the map will stop.
    lookahead = 4 * workers if until is not None else len(tasks)
    ctx = multiprocessing.get_context("spawn")  # Never fork a parent that may hold JAX threads.
    children_before = set(multiprocessing.active_children())
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx)
    pending: dict[concurrent.futures.Future, int] = {}
    try:
        next_task, stop = 0, False
        while pending or (next_task < len(tasks) and not stop):
            while (not stop and next_task < min(len(tasks), prefix + lookahead)
                   and len(pending) < window):
                pending[pool.submit(_call, fn, tasks[next_task])] = next_task
                next_task += 1
            finished, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in finished:
                i = pending.pop(future)
                try:
                    done[i] = future.result()
                except Exception as e:  # The worker died or the result did not pickle.
                    done[i] = TaskFailed(f"{type(e).__name__}: {e}")
                bar.update(1)
            while prefix in done:
                prefix += 1
            if until is not None and not stop and until([done[i] for i in range(prefix)]):
                stop = True
                for future in list(pending):
                    if future.cancel():  # Not started: drop it (running ones finish and are kept).
                        del pending[future]
    except BaseException:
        # Ctrl-C or a bug here: stop now. Waiting on the pool can hang after an interrupt, so its
        # workers (the children that appeared with it) are terminated; files are written
        # atomically, so a killed task leaves nothing half-written.
        for future in pending:
            future.cancel()
        for child in set(multiprocessing.active_children()) - children_before:
            child.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [done[i] for i in range(prefix)] if until is not None else [done[i] for i in range(len(tasks))]


def _call(fn: Callable[[Any], Any], task: Any) -> Any:
    try:
        return fn(task)
    except Exception as e:  # Bad inputs are skipped and reported, never fatal to the build.
        return TaskFailed(f"{type(e).__name__}: {e}")


# ----------------------------------------------------------------------------- summary

def write_summary(root: str, summary: Mapping[str, Any]) -> None:
    write_json_atomic(os.path.join(root, SUMMARY_FILE), summary)


def hours(seconds: float) -> float:
    return round(seconds / 3600.0, 4)


def build_record(statuses: Sequence[str], total_hours: float, seconds: float, workers: int) -> dict:
    """summary["build"]: what this run did and how fast (the only part that differs between runs)."""
    return {"seconds": round(seconds, 2), "workers": workers,
            "built": sum(s == "built" for s in statuses), "reused": sum(s == "reused" for s in statuses),
            "hours_per_minute": round(total_hours / (seconds / 60.0), 4) if seconds > 0 else None}
