"""The piano small world: music21's bundled scores rendered by fluidsynth, laid out like MAESTRO.

    {root}/{split}/{performer}/{piece}/{performer}-{piece}.flac   16 kHz mono
                                       {performer}-{piece}.mid    the MIDI that was rendered
                                       {performer}-{piece}.json   piece, performer, soundfont, ...
    {root}/summary.json

A "performer" is a recording condition: a General MIDI soundfont, a tempo scale, a velocity scale
with per-note humanisation, and fluidsynth's reverb. Every part is played on program 0 (Acoustic
Grand Piano). Pieces come in a fixed composer order (Bach, then Palestrina, Mozart, ...), shuffled
within a composer by the seed; the corpus is the shortest prefix of that order reaching `hours`.
Each piece's split (`heldout_pieces`, ~10%) and performer are hashes of (piece, seed), so a piece
lands in the same place whatever else is built, and the whole build is byte-identical for any
number of workers. Scores are parsed in the worker processes (parsing is the slow part).
"""
from __future__ import annotations

import dataclasses
import os
import random
import re
import time
from collections import Counter, defaultdict
from typing import Sequence

import numpy as np

from audiolm_jax.audio import SAMPLE_RATE, save_audio
from audiolm_jax.data.piano_performers import (
    PERFORMERS,
    SOUNDFONT_DIRS,
    TAIL_S,
    Performer,
    RenderError,
    available_performers,
    choose_performer,
    find_soundfont,
    midi_seconds,
    perform_midi,
    render_midi,
)
from audiolm_jax.data.world_common import (
    Skipped,
    TaskFailed,
    build_record,
    existing_output,
    hours,
    parallel_map,
    recipe_digest,
    require_tools,
    skip_summary,
    sweep_temp_files,
    stable_fraction,
    stable_hash,
    write_bytes_atomic,
    write_json_atomic,
    write_summary,
)

BUILDER_VERSION = "piano_world/1"  # Bump when the MIDI, audio or JSON of a rendition changes.
SPLITS = ("train", "heldout_pieces")
HELDOUT_FRACTION = 0.1
COMPOSERS = ("bach", "palestrina", "mozart", "beethoven", "haydn", "monteverdi", "handel", "schubert",
             "chopin", "joplin", "weber", "verdi", "cpebach", "corelli")
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".krn")  # .rntxt are analyses; .abc files hold many tunes
# Tempo for scores without a metronome mark: (beats per minute, beat in quarter notes). Palestrina
# is alla breve: the beat is the half note, else the masses run twice as slow as they are sung.
DEFAULT_TEMPO = {"bach": (84, 1.0), "palestrina": (66, 2.0), "monteverdi": (72, 2.0)}
FALLBACK_TEMPO = (100, 1.0)
MIN_PIECE_S, MAX_PIECE_S = 5.0, 900.0
PEAK_LEVEL = 0.5
SILENCE_RMS = 1e-4
TOOLS = {"fluidsynth": "fluidsynth"}


def piece_split(piece_id: str, seed: int) -> str:
    return "heldout_pieces" if stable_fraction("split", seed, piece_id) < HELDOUT_FRACTION else "train"


# ----------------------------------------------------------------------------- the piece list

@dataclasses.dataclass(frozen=True)
class Piece:
    piece_id: str  # "bach_bwv66_6": a path component, no '-'
    composer: str
    source: str  # path inside music21's corpus, e.g. "bach/bwv66.6.mxl"
    path: str  # absolute path of the score


def piece_id_for(source: str) -> str:
    """'mozart/k155/movement1.mxl' -> 'mozart_k155_movement1'."""
    stem = os.path.splitext(source)[0]
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]", "_", stem.lower())).strip("_")


def list_pieces(seed: int, composers: Sequence[str] = COMPOSERS) -> list[Piece]:
    """The bundled scores in build order: composers in `composers` order, shuffled within each."""
    from music21 import corpus  # Imported here: only the planning process needs the corpus index.

    pieces, seen = [], set()
    for composer in composers:
        group = []
        for path in sorted(str(p) for p in corpus.getComposer(composer)):
            if not path.lower().endswith(SCORE_SUFFIXES):
                continue
            source = path.split(os.sep + "corpus" + os.sep, 1)[-1].replace(os.sep, "/")
            piece_id = piece_id_for(source)
            if piece_id in seen:  # A score in two formats (.krn and .mxl): keep the first.
                continue
            seen.add(piece_id)
            group.append(Piece(piece_id, composer, source, path))
        random.Random(f"piano_world:{seed}:{composer}").shuffle(group)
        pieces += group
    return pieces


# ----------------------------------------------------------------------------- tasks

@dataclasses.dataclass(frozen=True)
class PieceTask:
    root: str
    seed: int
    piece: Piece
    performer: Performer
    split: str

    @property
    def utt_id(self) -> str:
        return f"{self.performer.name}-{self.piece.piece_id}"

    @property
    def piece_dir(self) -> str:
        return os.path.join(self.root, self.split, self.performer.name, self.piece.piece_id)

    def path(self, ext: str) -> str:
        return os.path.join(self.piece_dir, self.utt_id + ext)

    def recipe(self) -> dict:
        return {"builder": BUILDER_VERSION, "source": self.piece.source, "seed": self.seed,
                "performer": self.performer.describe(), "sample_rate": SAMPLE_RATE}


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A piece ready to render (`midi` set) or already rendered on disk (`midi` None)."""

    task: PieceTask
    midi_duration: float
    midi: bytes | None
    title: str
    notes: int


@dataclasses.dataclass(frozen=True)
class Rendered:
    utt_id: str
    status: str  # "built" | "reused"
    duration: float


# ----------------------------------------------------------------------------- workers

def prepare_piece(task: PieceTask) -> Prepared | Skipped:
    """Parse a score and make its performance MIDI (or find the rendition already on disk)."""
    meta = existing_output(task.path(".flac"), task.path(".json"), recipe_digest(task.recipe()),
                           extra_files=[task.path(".mid")])
    if meta is not None and isinstance(meta.get("midi_duration"), (int, float)):
        return Prepared(task, float(meta["midi_duration"]), None, str(meta.get("title", "")),
                        int(meta.get("notes", 0)))
    from music21 import converter, stream, tempo
    from music21.midi import translate

    item = task.piece.source
    try:
        score = converter.parse(task.piece.path, forceSource=True)
    except Exception as e:  # music21 raises many types for bad scores.
        return Skipped(item, "parse_failed", f"music21 cannot parse it: {type(e).__name__}: {e}")
    if isinstance(score, stream.Opus):
        return Skipped(item, "not_one_piece", f"the file holds {len(score.scores)} pieces (an Opus)")
    marked = any(True for _ in score.recurse().getElementsByClass(tempo.MetronomeMark))
    bpm, beat = DEFAULT_TEMPO.get(task.piece.composer, FALLBACK_TEMPO)
    default_us = None if marked else round(60e6 / (bpm * beat))
    try:
        mf = translate.streamToMidiFile(score)
    except Exception as e:
        return Skipped(item, "midi_failed", f"music21 cannot write its MIDI: {type(e).__name__}: {e}")
    rng = random.Random(stable_hash("humanise", task.seed, task.piece.piece_id))
    notes = perform_midi(mf, task.performer, rng, default_us)
    seconds = midi_seconds(mf) - TAIL_S
    if notes == 0:
        return Skipped(item, "no_notes", "the score has no notes")
    if not MIN_PIECE_S <= seconds <= MAX_PIECE_S:
        kind = "too_short" if seconds < MIN_PIECE_S else "too_long"
        return Skipped(item, kind, f"{seconds:.1f} s at tempo x{task.performer.tempo_scale} "
                                   f"(kept: {MIN_PIECE_S:g}-{MAX_PIECE_S:g} s)")
    title = (score.metadata.bestTitle or "") if score.metadata is not None else ""
    if title == os.path.basename(task.piece.path):  # music21 falls back to the file name
        title = ""
    return Prepared(task, round(seconds, 3), mf.writestr(), str(title), notes)


def render_piece(prepared: Prepared) -> Rendered | Skipped:
    """Render the performance MIDI with fluidsynth; write FLAC, MIDI, then the JSON."""
    task = prepared.task
    if prepared.midi is None:
        meta = existing_output(task.path(".flac"), task.path(".json"), recipe_digest(task.recipe()),
                               extra_files=[task.path(".mid")])
        if meta is not None:
            return Rendered(task.utt_id, "reused", float(meta["duration"]))
        return Skipped(task.piece.source, "vanished", "its files disappeared during the build; rerun")
    soundfont = find_soundfont(task.performer.soundfont)
    if soundfont is None:
        return Skipped(task.piece.source, "soundfont_missing", f"{task.performer.soundfont} not in "
                                                               f"{', '.join(SOUNDFONT_DIRS)}")
    try:
        wav = render_midi(prepared.midi, task.performer, soundfont)
    except RenderError as e:
        return Skipped(task.piece.source, "render_failed", str(e))
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    if rms < SILENCE_RMS:
        return Skipped(task.piece.source, "silent", f"rendered RMS {rms:.2e} (< {SILENCE_RMS:.0e})")
    wav = (wav * (PEAK_LEVEL / float(np.max(np.abs(wav))))).astype(np.float32)
    duration = len(wav) / SAMPLE_RATE
    save_audio(task.path(".flac"), wav, SAMPLE_RATE)
    write_bytes_atomic(task.path(".mid"), prepared.midi)
    meta = {
        "piece": task.piece.piece_id, "composer": task.piece.composer, "title": prepared.title,
        "source": task.piece.source, "performer": task.performer.name,
        "soundfont": task.performer.soundfont, "tempo_scale": task.performer.tempo_scale,
        "velocity_scale": task.performer.velocity_scale, "humanise": task.performer.humanise,
        "reverb_room": task.performer.reverb_room, "program": 0, "notes": prepared.notes,
        "midi_duration": prepared.midi_duration, "duration": duration, "sample_rate": SAMPLE_RATE,
        "recipe": recipe_digest(task.recipe()),
    }
    write_json_atomic(task.path(".json"), meta)  # Last: its presence marks the rendition complete.
    return Rendered(task.utt_id, "built", duration)


# ----------------------------------------------------------------------------- the build

def _prepared_seconds(results: Sequence) -> float:
    return sum(p.midi_duration + TAIL_S for p in results if isinstance(p, Prepared))


def select_prefix(prepared: Sequence[Prepared | Skipped], target_s: float) -> tuple[list, list]:
    """The shortest prefix (in piece order) whose rendered pieces reach `target_s` seconds:
    (kept Prepared, Skipped before the cut). Independent of how the results were computed."""
    kept, skipped, total = [], [], 0.0
    for p in prepared:
        if total >= target_s:
            break
        if isinstance(p, Prepared):
            kept.append(p)
            total += p.midi_duration + TAIL_S  # the audio keeps the release tail
        else:
            skipped.append(p)
    return kept, skipped


def build_piano_world(out_dir: str, hours: float = 0.5, seed: int = 0, workers: int = 2,
                      progress: bool = True, composers: Sequence[str] = COMPOSERS) -> dict:
    """Build (or resume) the piano small world under `out_dir`; returns the summary, also written
    to `{out_dir}/summary.json`."""
    if not hours > 0:
        raise ValueError(f"hours must be > 0, got {hours!r}. Fix: pass e.g. hours=0.5")
    start = time.monotonic()
    require_tools(TOOLS)
    performers = available_performers()
    if not performers:
        raise RuntimeError(f"no soundfont of {[p.soundfont for p in PERFORMERS]} in {SOUNDFONT_DIRS}. "
                           f"Fix: apt-get install fluid-soundfont-gm timgm6mb-soundfont")
    root = os.path.abspath(out_dir)
    os.makedirs(root, exist_ok=True)
    pieces = list_pieces(seed, composers)
    sweep_temp_files(root, SPLITS)  # left by a killed build
    tasks = [PieceTask(root, seed, p, choose_performer(p.piece_id, seed, performers),
                       piece_split(p.piece_id, seed)) for p in pieces]

    # Parse in piece order until the pieces finished in order reach the target; the exact cut is
    # then taken from that prefix, so it does not depend on the workers.
    target_s = hours * 3600.0
    prepared = parallel_map(prepare_piece, tasks, workers=workers, desc="piano world: parse",
                            progress=progress, unit="piece",
                            until=lambda done: _prepared_seconds(done) >= target_s)
    prepared = [r if not isinstance(r, TaskFailed) else Skipped(t.piece.source, "error", r.error)
                for t, r in zip(tasks, prepared)]
    kept, skipped = select_prefix(prepared, target_s)

    results = parallel_map(render_piece, kept, workers=workers, desc="piano world: render",
                           progress=progress, unit="piece")
    done = []
    for p, r in zip(kept, results):
        if isinstance(r, Rendered):
            done.append((p, r))
        else:
            skipped.append(r if isinstance(r, Skipped) else Skipped(p.task.piece.source, "error", r.error))
    summary = _summary(root, done, skipped, performers, hours, seed)
    summary["build"] = build_record([r.status for _, r in done], summary["hours"]["total"],
                                    time.monotonic() - start, workers)
    write_summary(root, summary)
    return summary


def _summary(root, done, skipped, performers, target_hours, seed) -> dict:
    seconds, count = Counter(), Counter()
    per_performer = defaultdict(lambda: {"pieces": 0, "seconds": 0.0})
    composers = defaultdict(Counter)
    for p, r in done:
        seconds[p.task.split] += r.duration
        count[p.task.split] += 1
        per_performer[p.task.performer.name]["pieces"] += 1
        per_performer[p.task.performer.name]["seconds"] += r.duration
        composers[p.task.split][p.task.piece.composer] += 1
    return {
        "corpus": "piano_world",
        "builder": BUILDER_VERSION,
        "seed": seed,
        "hours_target": target_hours,
        "sample_rate": SAMPLE_RATE,
        "hours": dict({s: hours(seconds[s]) for s in SPLITS}, total=hours(sum(seconds.values()))),
        "pieces": dict({s: count[s] for s in SPLITS}, total=sum(count.values())),
        "composers": {s: dict(sorted(composers[s].items())) for s in SPLITS},
        "heldout_pieces": sorted(p.task.piece.piece_id for p, _ in done if p.task.split == "heldout_pieces"),
        "performers": [dict(p.describe(), pieces=per_performer[p.name]["pieces"],
                            hours=hours(per_performer[p.name]["seconds"])) for p in performers],
        "performers_unavailable": [p.name for p in PERFORMERS if p not in performers],
        "soundfonts": sorted({p.soundfont for p in performers}),
        "skipped": skip_summary(skipped),
    }
