"""Training metrics: TensorBoard event files, the progress line, throughput, MFU and memory."""

from __future__ import annotations

import dataclasses
import os
import resource
from typing import Mapping, Sequence

import jax
import numpy as np


def mfu(
    flops_per_step: float, seconds_per_step: float, num_devices: int, peak_per_device: float | None
) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the devices' peak (peaks by device kind:
    audiolm_jax/device_specs.py)."""
    if not peak_per_device or not flops_per_step or seconds_per_step <= 0:
        return None
    return flops_per_step / seconds_per_step / (peak_per_device * num_devices)


def memory_in_use() -> dict[str, float]:
    """Bytes in use / peak on the first local device; host peak RSS where devices do not say."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_in_use" in stats:
        return {
            "memory/device_bytes": float(stats["bytes_in_use"]),
            "memory/device_peak_bytes": float(
                stats.get("peak_bytes_in_use", stats["bytes_in_use"])
            ),
        }
    return {
        "memory/host_peak_bytes": float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    }


def mean_metrics(history: Sequence[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Averages host metric dicts over steps; counters (`nonfinite_*`, `halted`) take the last."""
    if not history:
        return {}
    out = {}
    for key in history[-1]:
        values = [float(h[key]) for h in history if key in h]
        last = key.startswith("nonfinite_") or key == "halted"
        out[key] = values[-1] if last else float(np.mean(values))
    return out


def _human(x: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def progress_line(step: int, total: int, metrics: Mapping[str, float]) -> str:
    """One line: step, losses, throughput, step time, MFU, memory."""
    parts = [f"step {step}/{total}"]
    for key in sorted(metrics):
        if key.endswith("/loss"):
            parts.append(f"{key} {metrics[key]:.4f}")
    if metrics.get("nonfinite_total"):
        parts.append(f"skipped {int(metrics['nonfinite_total'])}")
    if "perf/tokens_per_sec" in metrics:
        parts.append(f"{_human(metrics['perf/tokens_per_sec'])} tok/s")
    if "perf/audio_sec_per_sec" in metrics:
        parts.append(f"{_human(metrics['perf/audio_sec_per_sec'])} audio-s/s")
    if "perf/step_time" in metrics:
        parts.append(f"{metrics['perf/step_time'] * 1e3:.1f} ms/step")
    if "perf/mfu" in metrics:
        parts.append(f"MFU {100 * metrics['perf/mfu']:.1f}%")
    for key in ("memory/device_bytes", "memory/host_peak_bytes"):
        if key in metrics:
            parts.append(f"mem {_human(metrics[key], 'B')}")
    return " | ".join(parts)


@dataclasses.dataclass
class Throughput:
    """Per-step costs turned into rates: tokens, audio seconds, model FLOPs per global step."""

    tokens: float = 0.0
    audio_seconds: float = 0.0
    flops: float = 0.0
    num_devices: int = 1
    peak_flops: float | None = None

    def rates(self, seconds_per_step: float) -> dict[str, float]:
        out = {"perf/step_time": seconds_per_step}
        if seconds_per_step <= 0:
            return out
        if self.tokens:
            out["perf/tokens_per_sec"] = self.tokens / seconds_per_step
        if self.audio_seconds:
            out["perf/audio_sec_per_sec"] = self.audio_seconds / seconds_per_step
        util = mfu(self.flops, seconds_per_step, self.num_devices, self.peak_flops)
        if util is not None:
            out["perf/mfu"] = util
        return out


class MetricsWriter:
    """TensorBoard scalars under `logdir` (process 0 only; a no-op elsewhere)."""

    def __init__(self, logdir: str | os.PathLike | None):
        self._writer = None
        if logdir is not None and jax.process_index() == 0:
            from tensorboardX import SummaryWriter  # noqa: PLC0415 - only the writing process needs it

            self._writer = SummaryWriter(os.fspath(logdir))

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
        if self._writer is None:
            return
        for key, value in values.items():
            self._writer.add_scalar(prefix + key, float(value), step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
