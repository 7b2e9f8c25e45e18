"""The offline tokenize job: a corpus split -> a token cache (see `audiolm_jax.tokens.cache`).

    spec = JobSpec(corpus="data/world/speech", split="train", codec="exports/codec",
                   semantic="exports/semantic_tokenizer", out="caches/speech_train")
    summary = run_job(spec)                     # or run_job(spec, runner="beam")

The work unit is a shard. Utterances of the split, sorted by id, are dealt round-robin to
`num_shards` shards (a pure function of the listing). `ensure_shard` (shared by the local and the
Beam runners) skips a shard whose record proves it done, else tokenizes its utterances in
length-bucketed batches, writes the shard npz atomically and then its record
(`shard-XXXXX-of-YYYYY.done.json`: checksum, counts, skipped files, and the fingerprints of the
inputs and models it was made from). The manifest is written last, from the records. So:
- a rerun redoes only shards that are missing, corrupt, or stale (other models or inputs);
- a kill at any point loses at most the shards in flight, and the rerun writes the same bytes
  (shards hold no timestamps; the manifest is canonical JSON built from the records);
- bad audio (the typed errors of `audiolm_jax.audio.errors`) and clips shorter than one 40 ms
  frame are skipped, counted and listed (paths relative to the corpus root).
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import time
from typing import Callable, Iterator, Sequence

import numpy as np

from audiolm_jax.audio import SAMPLE_RATE, AudioError, audio_info, load_audio
from audiolm_jax.tokens import cache
from audiolm_jax.tokens.batching import (
    SEMANTIC_HOP,
    STEPS_PER_OCTAVE,
    acoustic_frames,
    bucket_length,
    check_steps_per_octave,
    pad_batch,
    plan_batches,
    semantic_frames,
)

RECORD_FORMAT = "audiolm-jax-token-cache-shard-record"
RECORD_SUFFIX = ".done.json"
Log = Callable[[str], None]


class TokenizeJobError(ValueError):
    """The job cannot run as asked (bad spec, out directory of another cache); names the fix."""


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """What to tokenize, with which models, into which cache.

    corpus: root of an audio tree (`layout`: libri_light, librispeech or piano).
    codec: codec trainer workdir / checkpoints folder / step folder, or a generator export.
    semantic: a SemanticTokenizer directory. out: the cache directory.
    batch_size: utterances per compiled batch (split over the local devices).
    dataset: the manifest's dataset name (default: the corpus directory's name).
    codec_gin, codec_gin_bindings: gin files / bindings for the codec's SoundStreamConfig when
      its directory has no operative_config.gin (as `audiolm-jax codec --gin_file`).
    load_threads: audio files decoded ahead in threads; compile_threads: bucket programs
      compiled at once (XLA compiles without the GIL).
    buckets_per_octave: padded lengths per doubling of the utterance length (`batching`); each
      is one compiled program, so 1 (power-of-two lengths, up to ~2x padding) suits a small job
      that compiling dominates (on GPU each shape costs tens of seconds of autotuning). It does
      not change the tokens (>= 1 frame of zero padding), so it is not part of a shard's record.
    """
    corpus: str
    split: str
    codec: str
    semantic: str
    out: str
    num_shards: int = 8
    batch_size: int = 8
    dataset: str | None = None
    layout: str = "libri_light"
    codec_gin: tuple[str, ...] = ()
    codec_gin_bindings: tuple[str, ...] = ()
    compute_dtype: str | None = None
    load_threads: int = 4
    compile_threads: int = 8
    buckets_per_octave: int = STEPS_PER_OCTAVE

    @property
    def dataset_name(self) -> str:
        return self.dataset or os.path.basename(os.path.abspath(self.corpus))


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """Shard `index` of `count`: its utterances as (id, path relative to the corpus root)."""
    index: int
    count: int
    items: tuple[tuple[str, str], ...]

    @property
    def file(self) -> str:
        return cache.shard_name(self.index, self.count)

    @property
    def record_file(self) -> str:
        return self.file[:-len(".npz")] + RECORD_SUFFIX

    @property
    def inputs_sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.items).encode()).hexdigest()


def plan_shards(spec: JobSpec) -> list[ShardPlan]:
    """Lists the split and deals its utterances (sorted by id) round-robin to the shards."""
    from audiolm_jax.data.corpus import scan_corpus  # noqa: PLC0415

    if spec.num_shards < 1 or spec.batch_size < 1:
        raise TokenizeJobError(f"num_shards ({spec.num_shards}) and batch_size "
                               f"({spec.batch_size}) must be positive")
    try:
        check_steps_per_octave(spec.buckets_per_octave)
    except ValueError as e:
        raise TokenizeJobError(f"{e} (--buckets-per-octave; 1 = power-of-two lengths)") from None
    index = scan_corpus(spec.corpus, spec.layout, splits=[spec.split])
    examples = sorted(index.split(spec.split), key=lambda e: e.id)
    items = [(e.id, os.path.relpath(e.path, index.root).replace(os.sep, "/")) for e in examples]
    return [ShardPlan(i, spec.num_shards, tuple(items[i::spec.num_shards]))
            for i in range(spec.num_shards)]


# --- one shard ---------------------------------------------------------------------------------

def _expected_record_keys(plan: ShardPlan, info) -> dict:
    # What a done shard depends on. Not buckets_per_octave (nor batch_size): ids and codes are
    # the same whatever the padded length (at least one frame of zeros, see `batching`), so a
    # rerun with another value accepts the shards already written, fills in the missing ones,
    # and the records and manifest stay byte-identical (tested).
    return {"format": RECORD_FORMAT, "file": plan.file, "inputs_sha256": plan.inputs_sha256,
            "models": dataclasses.asdict(info)}


def read_valid_record(out: str, plan: ShardPlan, info) -> dict | None:
    """The shard's record if it proves the shard done for these inputs and models, else None."""
    try:
        with open(os.path.join(out, plan.record_file), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if any(record.get(k) != v for k, v in _expected_record_keys(plan, info).items()):
        return None
    shard = os.path.join(out, plan.file)
    if not os.path.isfile(shard) or cache.sha256_file(shard) != record.get("sha256"):
        return None
    return record


def _estimated_samples(path: str) -> int:
    """Length at 16 kHz from the header (no decoding): enough to group similar lengths."""
    info = audio_info(path)
    return int(round(info.frames * SAMPLE_RATE / info.sample_rate))


def _skip_reason(error, path: str) -> str:
    """`kind: reason` with the corpus root left out, so the manifest does not depend on where
    the corpus lives."""
    return f"{error.kind}: {error.reason}".replace(path, os.path.basename(path))


def _load(path: str):
    """(wav, None) or (None, reason) for one file: bad audio never stops the shard."""
    try:
        wav = load_audio(path)
    except AudioError as e:
        return None, _skip_reason(e, path)
    if semantic_frames(len(wav)) == 0:
        return None, (f"too_short: {len(wav)} samples, less than one 40 ms frame "
                      f"({SEMANTIC_HOP} samples at 16 kHz)")
    return wav, None


def _loaded_batches(paths: Sequence[str], batches: list[list[int]], threads: int, ahead: int = 2
                    ) -> Iterator[tuple[list[int], list]]:
    """Yields (rows, [(wav, reason)]) per batch, decoding the next batches in threads."""
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
        pending = collections.deque()
        for rows in batches:
            pending.append((rows, [pool.submit(_load, paths[r]) for r in rows]))
            if len(pending) > ahead:
                rows_done, futures = pending.popleft()
                yield rows_done, [f.result() for f in futures]
        while pending:
            rows_done, futures = pending.popleft()
            yield rows_done, [f.result() for f in futures]


def tokenize_shard(models, spec: JobSpec, plan: ShardPlan, timings: dict | None = None
                   ) -> tuple[list[cache.Utterance], list[dict]]:
    """Tokenizes the utterances of `plan`: (utterances sorted by id, skipped sorted by path).
    `timings`, if given, receives compile_s and programs (compiled ahead for this shard)."""
    root = os.path.abspath(spec.corpus)
    paths, ids, lengths, skipped = [], [], [], []
    for uid, rel in plan.items:
        try:
            lengths.append(_estimated_samples(os.path.join(root, rel)))
        except AudioError as e:
            skipped.append({"path": rel, "reason": _skip_reason(e, os.path.join(root, rel))})
            continue
        paths.append(os.path.join(root, rel))
        ids.append((uid, rel))
    utterances, in_flight = [], None
    batches = plan_batches(lengths, spec.batch_size)
    # Every bucket shape of the shard compiled at once, in threads (header lengths: a file whose
    # decoded length lands in another bucket, or a skipped one, just compiles on first use).
    start = time.perf_counter()
    programs = models.compile(
        spec.batch_size, [bucket_length(max(lengths[r] for r in rows), spec.buckets_per_octave)
                          for rows in batches], spec.compile_threads)
    if timings is not None:
        timings.update(compile_s=time.perf_counter() - start, programs=programs)
    for rows, loaded in _loaded_batches(paths, batches, spec.load_threads):
        good = {}
        for r, (wav, reason) in zip(rows, loaded):
            if wav is None:
                skipped.append({"path": ids[r][1], "reason": reason})
            else:
                good[r] = wav
        if not good:
            continue
        batch = pad_batch(list(good), good, spec.batch_size, spec.buckets_per_octave)
        # Dispatch this batch before fetching the previous one: the device never waits on the
        # host's padding and transfers.
        dispatched = (batch.rows, {r: len(w) for r, w in good.items()},
                      models.dispatch(batch.wav, batch.lengths))
        if in_flight is not None:
            utterances += _collect(ids, *in_flight)
        in_flight = dispatched
    if in_flight is not None:
        utterances += _collect(ids, *in_flight)
    utterances.sort(key=lambda u: u.id)
    skipped.sort(key=lambda s: s["path"])
    return utterances, skipped


def _collect(ids, rows, samples, outputs) -> list[cache.Utterance]:
    """Utterances of one dispatched batch, outputs trimmed to each row's true frame counts."""
    codes, semantic = (np.asarray(x, np.int32) for x in outputs)
    return [cache.Utterance(id=ids[r][0], semantic=semantic[slot, :semantic_frames(samples[r])],
                            acoustic=codes[slot, :acoustic_frames(samples[r])],
                            seconds=float(np.float32(samples[r] / SAMPLE_RATE)))
            for slot, r in enumerate(rows) if r >= 0]


def ensure_shard(models, spec: JobSpec, plan: ShardPlan, log: Log | None = None) -> dict:
    """The shard's record: the existing one if valid, else tokenize, write shard, write record."""
    existing = read_valid_record(spec.out, plan, models.info)
    if existing is not None:
        return existing
    start, timings = time.perf_counter(), {}
    utterances, skipped = tokenize_shard(models, spec, plan, timings)
    digest = cache.write_shard(os.path.join(spec.out, plan.file), utterances)
    record = {**_expected_record_keys(plan, models.info), "sha256": digest,
              "utterances": len(utterances),
              "seconds": round(float(sum(np.float64(u.seconds) for u in utterances)), 6),
              "skipped": skipped}
    cache.atomic_write_bytes(os.path.join(spec.out, plan.record_file), cache.manifest_bytes(record))
    wall = time.perf_counter() - start
    if log is not None:
        hours = record["seconds"] / 3600
        log(f"{plan.file}: {len(utterances)} utterances, {hours:.3f} h, {len(skipped)} skipped, "
            f"{wall:.1f} s ({hours / max(wall, 1e-9) * 3600:.1f} h of audio per hour; "
            f"{timings['programs']} programs compiled ahead in {timings['compile_s']:.1f} s)")
    return {**record, "wall_s": wall, **timings, "written": True}


# --- the whole job -----------------------------------------------------------------------------

def prepare_out(spec: JobSpec) -> None:
    """Create `out`, refuse one holding a different cache, and drop temp files of killed runs."""
    os.makedirs(spec.out, exist_ok=True)
    manifest_path = os.path.join(spec.out, cache.MANIFEST_NAME)
    if os.path.exists(manifest_path):
        try:
            with open(manifest_path, encoding="utf-8") as f:
                manifest = json.load(f)
        except (OSError, ValueError):
            manifest = {}
        theirs = {k: manifest.get(k) for k in ("dataset", "split", "num_shards")}
        ours = {"dataset": spec.dataset_name, "split": spec.split, "num_shards": spec.num_shards}
        if manifest and theirs != ours:
            raise TokenizeJobError(
                f"{manifest_path}: --out holds another cache ({theirs}, this job is {ours}); "
                "choose another --out or delete that directory")
    for name in os.listdir(spec.out):
        if name.startswith(".") and ".tmp-" in name:
            os.remove(os.path.join(spec.out, name))


def build_manifest(spec: JobSpec, plans: Sequence[ShardPlan], records: Sequence[dict]) -> dict:
    """The cache manifest from the shard records (all made by the same models)."""
    models = {json.dumps(r["models"], sort_keys=True) for r in records}
    if len(models) != 1:
        raise TokenizeJobError(f"{spec.out}: shard records name different models; rerun the job "
                               "(stale shards are rewritten)")
    info = records[0]["models"]
    skipped = sorted((s for r in records for s in r["skipped"]), key=lambda s: s["path"])
    seconds = round(float(sum(r["seconds"] for r in records)), 6)
    return {
        "format": cache.FORMAT, "version": cache.VERSION,
        "dataset": spec.dataset_name, "split": spec.split,
        "semantic": {"tokenizer": info["tokenizer"], "num_clusters": info["num_clusters"],
                     "frame_rate": cache.SEMANTIC_FRAME_RATE,
                     "params_sha256": info["tokenizer_sha256"]},
        "acoustic": {"codec": info["codec"], "num_quantizers": info["num_quantizers"],
                     "codebook_size": info["codebook_size"],
                     "frame_rate": cache.ACOUSTIC_FRAME_RATE, "params_sha256": info["codec_sha256"]},
        "num_shards": len(plans),
        "shards": [{"file": p.file, "utterances": r["utterances"], "seconds": r["seconds"],
                    "sha256": r["sha256"]} for p, r in zip(plans, records)],
        "skipped": skipped,
        "totals": {"utterances": sum(r["utterances"] for r in records), "seconds": seconds,
                   "skipped": len(skipped)},
        "source": {"layout": spec.layout, "listed": sum(len(p.items) for p in plans)},
    }


def finalize(spec: JobSpec, plans: Sequence[ShardPlan], records: Sequence[dict]) -> dict:
    """Write the manifest unless the same bytes are already there (a no-op rerun writes nothing)."""
    manifest = build_manifest(spec, plans, records)
    path = os.path.join(spec.out, cache.MANIFEST_NAME)
    try:
        with open(path, "rb") as f:
            unchanged = f.read() == cache.manifest_bytes(manifest)
    except OSError:
        unchanged = False
    if not unchanged:
        cache.write_manifest(spec.out, manifest)
    return manifest


def read_records(spec: JobSpec, plans: Sequence[ShardPlan]) -> list[dict]:
    """The records of every shard after a runner finished (raises if one is missing)."""
    records = []
    for plan in plans:
        path = os.path.join(spec.out, plan.record_file)
        try:
            with open(path, encoding="utf-8") as f:
                records.append(json.load(f))
        except (OSError, ValueError) as e:
            raise TokenizeJobError(f"{path}: shard record missing or unreadable after the run "
                                   f"({e}); rerun the job to redo that shard") from e
    return records


def run_local(spec: JobSpec, plans: Sequence[ShardPlan], models=None, log: Log | None = None
              ) -> tuple[int, float]:
    """Every shard in this process, batched on the local JAX devices; returns (shards written,
    seconds of audio in them)."""
    from audiolm_jax.tokens.models import FrozenTokenizers  # noqa: PLC0415

    models = models or FrozenTokenizers.from_spec(spec)
    written = [r for r in (ensure_shard(models, spec, plan, log) for plan in plans)
               if r.get("written")]
    return len(written), float(sum(r["seconds"] for r in written))


def run_job(spec: JobSpec, runner: str = "local", *, models=None, log: Log | None = print,
            pipeline_args: Sequence[str] = ()) -> dict:
    """Plan, run the missing shards with `runner` ("local" or "beam"), write the manifest.

    Returns a summary: utterances, hours, skipped (the whole cache), shards_written and
    hours_written (this run), wall_s and audio_hours_per_hour (this run's tokenized audio / wall).
    """
    start = time.perf_counter()
    plans = plan_shards(spec)
    prepare_out(spec)
    if log is not None:
        log(f"tokenize: {sum(len(p.items) for p in plans)} utterances of {spec.corpus} "
            f"({spec.split}) in {len(plans)} shards -> {spec.out} ({runner} runner)")
    if runner == "local":
        shards_written, seconds_written = run_local(spec, plans, models, log)
    elif runner == "beam":
        from audiolm_jax.tokens.beam_pipeline import run_beam  # noqa: PLC0415

        shards_written, seconds_written = run_beam(spec, plans, pipeline_args)
    else:
        raise TokenizeJobError(f"unknown runner {runner!r}; use 'local' or 'beam'")
    manifest = finalize(spec, plans, read_records(spec, plans))
    wall = time.perf_counter() - start
    hours_written = seconds_written / 3600
    return {"utterances": manifest["totals"]["utterances"],
            "hours": manifest["totals"]["seconds"] / 3600,
            "skipped": manifest["totals"]["skipped"], "shards": len(plans),
            "shards_written": shards_written, "hours_written": hours_written, "wall_s": wall,
            "audio_hours_per_hour": hours_written * 3600 / wall if wall > 0 else 0.0}


def summary_line(summary: dict) -> str:
    return (f"tokenize: {summary['utterances']} utterances, {summary['hours']:.3f} h, "
            f"{summary['skipped']} skipped; this run wrote {summary['shards_written']}/"
            f"{summary['shards']} shards ({summary['hours_written']:.3f} h) in "
            f"{summary['wall_s']:.1f} s wall = {summary['audio_hours_per_hour']:.1f} h of audio "
            "per hour")
