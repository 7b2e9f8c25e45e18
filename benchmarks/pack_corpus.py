"""Copies a corpus tree (any layout: the speech world, a sWUGGY/sBLIMP pairs directory, ...) to
DST with every audio file transcoded to Ogg/Opus, 16 kHz mono, for moving a corpus where bytes
are scarce (the GPU machine's 64 MiB carry): FLAC speech costs ~250 kbit/s, Opus ~25.

    python benchmarks/pack_corpus.py SRC DST [--bitrate-kbps 24] [--format opus]

- Audio (`audiolm_jax.data.corpus.AUDIO_EXTENSIONS`) is decoded to 16 kHz mono by
  `audiolm_jax.audio.load_audio` and written by `save_audio(..., bitrate_kbps=)` as
  `{stem}.opus` beside where the source was: the project's one encoder path (libsndfile's Opus
  encoder, variable bitrate around the target; the Ogg pages add ~1.5 kbit/s).
- Every other file (JSON sidecars, trans.txt, summary.json, pairs.json, MIDI, ...) is copied
  byte for byte; nothing is rewritten. Manifests that name `x.flac` still work: consumers find
  the audio of a stem through `audiolm_jax.data.corpus.find_audio` (eval/pairs.py,
  eval/abx_corpus.py). Hidden files (`.x.tmp`: atomic-write leftovers) are not copied.
- Resumable: an output is skipped when it is complete (an Opus file decoding to the source's
  number of samples; a copy with the source's size and mtime); every file is written under a
  hidden temporary name and renamed. DST/pack_corpus.json records the settings; a rerun with
  other settings into the same DST is refused.
- Quality check on `--quality-files` audio files spread evenly over the sorted list: the source
  and its Opus copy, both decoded at 16 kHz, compared by log-mel distance
  (`eval.codec_metrics.mel_distance`) and, when `pesq` imports, PESQ-WB. libsndfile applies
  Opus' pre-skip and end trim, so the decoded copy has exactly the source's length and no delay;
  the check still trims or zero-pads the copy to the source's length and reports the largest
  length difference it saw (`max_length_difference_samples`, 0 so far).

Prints a summary and writes it to DST/pack_corpus.json: files transcoded, skipped and copied,
bytes before and after (audio and other files apart), hours, the audio's real bitrate, and the
quality figures.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from audiolm_jax.audio import SAMPLE_RATE, audio_info, load_audio, save_audio  # noqa: E402
from audiolm_jax.audio.errors import AudioError  # noqa: E402
from audiolm_jax.data.corpus import is_audio_name  # noqa: E402
from audiolm_jax.data.world_common import TaskFailed, parallel_map, read_json  # noqa: E402
from audiolm_jax.eval.run_info import command_line, utc_now, write_json  # noqa: E402

REPORT = "pack_corpus.json"
FORMATS = {"opus": ".opus"}
FORMAT_VERSION = "audiolm_jax.pack_corpus/1"


def plan(src: str, dst: str, extension: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """([(source audio, output)], [(source file, copy)]), sorted, for every visible file of `src`.

    Raises ValueError when two sources would write one output (`a.flac` and `a.wav` side by side).
    """
    src, dst = os.path.abspath(src), os.path.abspath(dst)
    audio, other, writer = [], [], {}
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and os.path.abspath(os.path.join(dirpath, d)) != dst)
        rel_dir = os.path.relpath(dirpath, src)
        for name in sorted(f for f in filenames if not f.startswith(".")):
            source = os.path.join(dirpath, name)
            if rel_dir == "." and name == REPORT:
                continue  # a packed tree's own report describes that tree, not ours
            out_dir = os.path.normpath(os.path.join(dst, rel_dir))
            if is_audio_name(name):
                out = os.path.join(out_dir, os.path.splitext(name)[0] + extension)
                audio.append((source, out))
            else:
                out = os.path.join(out_dir, name)
                other.append((source, out))
            if out in writer:
                raise ValueError(f"{writer[out]} and {source} would both be written to {out}; "
                                 "pack a tree with one audio file per stem")
            writer[out] = source
    return audio, other


def transcode(task: tuple[str, str, float]) -> dict:
    """One audio file -> Opus at `bitrate_kbps`, unless a complete output exists. Module-level
    (parallel_map pickles it)."""
    source, out, bitrate_kbps = task
    info = audio_info(source)
    seconds = info.frames / info.sample_rate
    expected = round(info.frames * SAMPLE_RATE / info.sample_rate)  # load_audio's output length
    status = "skipped"
    if not _complete_audio(out, expected):
        save_audio(out, load_audio(source, SAMPLE_RATE), SAMPLE_RATE, bitrate_kbps=bitrate_kbps)
        status = "transcoded"
    return {"status": status, "seconds": seconds, "bytes_before": os.path.getsize(source),
            "bytes_after": os.path.getsize(out)}


def _complete_audio(path: str, expected_frames: int) -> bool:
    if not os.path.isfile(path):
        return False
    try:
        info = audio_info(path)
    except AudioError:
        return False
    return info.sample_rate == SAMPLE_RATE and info.channels == 1 and info.frames == expected_frames


def copy_file(source: str, out: str) -> str:
    """Byte-identical copy (mtime kept) through a hidden temp name; 'skipped' when `out` already
    has the source's size and mtime."""
    st = os.stat(source)
    try:
        ot = os.stat(out)
        if ot.st_size == st.st_size and ot.st_mtime_ns == st.st_mtime_ns:
            return "skipped"
    except FileNotFoundError:
        pass
    directory = os.path.dirname(out)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(out)}.pack.tmp")
    try:
        shutil.copy2(source, tmp)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return "copied"


def quality(pairs: list[tuple[str, str]], count: int) -> dict:
    """Source vs Opus copy on `count` files spread evenly over `pairs` (deterministic)."""
    from audiolm_jax.eval.codec_metrics import (MetricError, MetricUnavailable,  # noqa: PLC0415
                                                mel_distance, pesq_wb)

    if not pairs or count <= 0:
        return {"files": 0}
    picks = sorted({int(i) for i in np.linspace(0, len(pairs) - 1, min(count, len(pairs)))})
    rows, length_diffs, pesq_note = [], [], None
    for i in picks:
        source, out = pairs[i]
        ref, deg = load_audio(source, SAMPLE_RATE), load_audio(out, SAMPLE_RATE)
        length_diffs.append(len(deg) - len(ref))
        deg = deg[:len(ref)] if len(deg) >= len(ref) else np.pad(deg, (0, len(ref) - len(deg)))
        row = {"file": os.path.basename(out), "mel_distance": mel_distance(ref, deg)}
        if pesq_note is None:
            try:
                row["pesq_wb"] = pesq_wb(ref, deg)
            except MetricUnavailable as e:
                pesq_note = f"not measured: {e}"
            except MetricError as e:
                row["pesq_error"] = str(e)
        rows.append(row)
    out = {"files": len(rows),
           "mean_mel_distance": float(np.mean([r["mel_distance"] for r in rows])),
           "max_length_difference_samples": int(max(map(abs, length_diffs))),
           "alignment": "both decoded at 16 kHz by audiolm_jax.audio.load_audio (libsndfile "
                        "applies the Opus pre-skip); the copy trimmed or zero-padded to the "
                        "source's length (max_length_difference_samples says by how much)",
           "rows": rows}
    scored = [r["pesq_wb"] for r in rows if "pesq_wb" in r]
    out["mean_pesq_wb"] = float(np.mean(scored)) if scored else None
    if pesq_note:
        out["pesq_wb_note"] = pesq_note
    return out


def pack(src: str, dst: str, bitrate_kbps: float = 24.0, fmt: str = "opus", workers: int = 1,
         quality_files: int = 10, progress: bool = False) -> dict:
    """Packs `src` into `dst` (see the module doc) and returns the report it writes."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: use one of {sorted(FORMATS)}")
    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src}: not a directory; point SRC at a corpus root")
    settings = {"format": fmt, "bitrate_kbps": float(bitrate_kbps), "sample_rate": SAMPLE_RATE,
                "channels": 1}
    previous = _read_report(os.path.join(dst, REPORT))
    if previous is not None and previous.get("settings") != settings:
        raise ValueError(f"{dst} was packed with {previous.get('settings')}, not {settings}; "
                         "pack into a new DST (or delete this one)")
    start = time.time()
    audio, other = plan(src, dst, FORMATS[fmt])
    results = parallel_map(transcode, [(s, o, float(bitrate_kbps)) for s, o in audio],
                           workers=workers, desc="pack", progress=progress, unit="file")
    failed = [{"file": s, "reason": r.error} for (s, _), r in zip(audio, results)
              if isinstance(r, TaskFailed)]
    done = [r for r in results if not isinstance(r, TaskFailed)]
    copies = [copy_file(s, o) for s, o in other]
    seconds = sum(r["seconds"] for r in done)
    audio_before = sum(r["bytes_before"] for r in done)
    audio_after = sum(r["bytes_after"] for r in done)
    other_bytes = sum(os.path.getsize(s) for s, _ in other)
    report = {
        "format_version": FORMAT_VERSION, "source": os.path.abspath(src),
        "destination": os.path.abspath(dst), "settings": settings,
        "command": command_line(), "date": utc_now(),
        "files": {"audio": len(audio), "transcoded": sum(r["status"] == "transcoded" for r in done),
                  "skipped": sum(r["status"] == "skipped" for r in done), "failed": len(failed),
                  "other": len(other), "copied": copies.count("copied"),
                  "copy_skipped": copies.count("skipped")},
        "failed": failed,
        "hours": seconds / 3600.0,
        "bytes": {"audio_before": audio_before, "audio_after": audio_after, "other": other_bytes,
                  "total_before": audio_before + other_bytes,
                  "total_after": audio_after + other_bytes},
        "audio_kbps_after": audio_after * 8 / seconds / 1000 if seconds else None,
        "quality": quality([p for p, r in zip(audio, results) if not isinstance(r, TaskFailed)],
                           quality_files),
        "seconds": time.time() - start,
    }
    write_json(os.path.join(dst, REPORT), report)
    return report


def _read_report(path: str) -> dict | None:
    report = read_json(path)
    return report if isinstance(report, dict) else None


def summary_line(report: dict) -> str:
    b, f, q = report["bytes"], report["files"], report["quality"]
    mib = 1 << 20
    pesq = f", PESQ-WB {q['mean_pesq_wb']:.2f}" if q.get("mean_pesq_wb") is not None else ""
    mel = f"mel distance {q['mean_mel_distance']:.3f}" if q.get("files") else "no quality sample"
    return (f"pack_corpus: {f['audio']} audio files ({f['transcoded']} transcoded, {f['skipped']} "
            f"already done, {f['failed']} failed), {f['other']} other files; "
            f"{report['hours']:.2f} h; {b['total_before'] / mib:.1f} MiB -> "
            f"{b['total_after'] / mib:.1f} MiB (audio {b['audio_before'] / mib:.1f} -> "
            f"{b['audio_after'] / mib:.1f} MiB, {report['audio_kbps_after'] or 0:.1f} kbit/s; "
            f"other files {b['other'] / mib:.1f} MiB); {mel} over {q.get('files', 0)} files{pesq}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="corpus root to read (left untouched)")
    p.add_argument("dst", help="where the packed copy goes (created; a rerun resumes)")
    p.add_argument("--bitrate-kbps", type=float, default=24.0,
                   help="Opus target per channel, variable bitrate (default 24)")
    p.add_argument("--format", default="opus", choices=sorted(FORMATS))
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="encoding processes (default: 2 or the cores, if fewer)")
    p.add_argument("--quality-files", type=int, default=10,
                   help="files compared with their source (default 10; 0: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    report = pack(args.src, args.dst, args.bitrate_kbps, args.format, args.workers,
                  args.quality_files, progress=not args.quiet)
    print(summary_line(report), flush=True)
    print(f"pack_corpus: wrote {os.path.join(args.dst, REPORT)}", flush=True)
    return 1 if report["files"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
