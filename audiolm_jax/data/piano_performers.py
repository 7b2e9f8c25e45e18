"""Piano "performers": a soundfont, tempo, touch and room -- and the MIDI edits and render for them.

A performer turns music21's score MIDI into a performance: every part on program 0 (Acoustic
Grand Piano), tempi scaled, velocities scaled with a seeded per-note jitter ("humanisation"), and a
release tail; fluidsynth then renders it with the performer's soundfont and reverb. music21 is
imported inside the functions that need it, so that importing this module stays cheap.
"""
from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import tempfile
from typing import Sequence

import numpy as np

from audiolm_jax.audio import SAMPLE_RATE, AudioError, load_audio
from audiolm_jax.data.world_common import stable_hash

TAIL_S = 1.5  # Time after the last note-off for releases and reverb to ring out.
RENDER_RATE = 32000  # Render above 16 kHz and resample with soxr: fluidsynth's interpolation aliases.
FLUIDSYNTH_GAIN = 0.4
SOUNDFONT_DIRS = ("/usr/share/sounds/sf2", "/usr/share/sounds/sf3")
TOOL_TIMEOUT_S = 600


class RenderError(RuntimeError):
    """fluidsynth gave no usable audio for a MIDI file."""


@dataclasses.dataclass(frozen=True)
class Performer:
    name: str  # no '-': it separates the fields of an utterance id
    soundfont: str  # file name, found in SOUNDFONT_DIRS
    tempo_scale: float  # > 1 plays faster
    velocity_scale: float
    humanise: float  # std of the per-note velocity jitter (MIDI velocity units)
    reverb_room: float | None  # fluidsynth reverb room size in [0, 1]; None: reverb off
    weight: int  # relative share of pieces (the .sf3 loads slowly, so it gets fewer)

    def describe(self) -> dict:
        return {"name": self.name, "soundfont": self.soundfont, "tempo_scale": self.tempo_scale,
                "velocity_scale": self.velocity_scale, "humanise": self.humanise,
                "reverb_room": self.reverb_room}


PERFORMERS: tuple[Performer, ...] = (
    Performer("fluidr3_studio", "FluidR3_GM.sf2", 1.00, 1.00, 0.0, None, 2),
    Performer("fluidr3_hall", "FluidR3_GM.sf2", 0.90, 0.85, 6.0, 0.8, 2),
    Performer("timgm_brisk", "TimGM6mb.sf2", 1.12, 1.10, 0.0, None, 2),
    Performer("timgm_room", "TimGM6mb.sf2", 0.95, 0.90, 8.0, 0.4, 2),
    Performer("musescore_lite", "MuseScore_General_Lite.sf3", 1.05, 1.00, 4.0, 0.3, 1),
)


def find_soundfont(name: str) -> str | None:
    for d in SOUNDFONT_DIRS:
        path = os.path.join(d, name)
        if os.path.isfile(path):
            return path
    return None


def available_performers() -> tuple[Performer, ...]:
    return tuple(p for p in PERFORMERS if find_soundfont(p.soundfont))


def choose_performer(piece_id: str, seed: int, performers: Sequence[Performer]) -> Performer:
    """Weighted choice by a hash of (piece, seed): independent of which other pieces exist."""
    slots = [p for p in performers for _ in range(p.weight)]
    return slots[stable_hash("performer", seed, piece_id) % len(slots)]


# ----------------------------------------------------------------------------- MIDI performance

def _midi_events(mf):
    from music21 import midi
    for track in mf.tracks:
        for e in track.events:
            if isinstance(e, midi.MidiEvent):
                yield track, e


def perform_midi(mf, performer: Performer, rng: random.Random, default_us_per_quarter: int | None) -> int:
    """Edit a music21 MidiFile in place into a performance; returns the number of notes.

    Every part on program 0, velocities scaled and jittered, tempi scaled, and TAIL_S of silence
    after the end. `default_us_per_quarter` replaces music21's default tempo for unmarked scores.
    """
    from music21 import midi
    notes = 0
    for _, e in _midi_events(mf):
        if e.type == midi.MetaEvents.SET_TEMPO:
            us = default_us_per_quarter or int.from_bytes(e.data, "big")
            e.data = min(0xFFFFFF, max(1, round(us / performer.tempo_scale))).to_bytes(3, "big")
        elif e.type == midi.ChannelVoiceMessages.PROGRAM_CHANGE:
            e.data = 0
        elif e.type == midi.ChannelVoiceMessages.NOTE_ON and e.velocity:
            jitter = rng.gauss(0.0, performer.humanise) if performer.humanise else 0.0
            e.velocity = int(min(127, max(1, round(e.velocity * performer.velocity_scale + jitter))))
            notes += 1
        if e.isChannelEvent() and e.channel == 10:  # GM channel 10 is drums; keep it a piano.
            e.channel = 16
    tail_ticks = round(TAIL_S * 1e6 / _tempo_map(mf)[-1][1] * mf.ticksPerQuarterNote)
    for track in mf.tracks:
        events = track.events
        for i, e in enumerate(events):
            if isinstance(e, midi.MidiEvent) and e.type == midi.MetaEvents.END_OF_TRACK and i > 0 \
                    and isinstance(events[i - 1], midi.DeltaTime):
                events[i - 1].time += tail_ticks
    return notes


def _tempo_map(mf) -> list[tuple[int, int]]:
    """[(tick, us_per_quarter)] sorted by tick, starting at tick 0 (120 qpm if unset)."""
    from music21 import midi
    changes = {0: 500000}
    for track in mf.tracks:
        tick = 0
        for e in track.events:
            if isinstance(e, midi.DeltaTime):
                tick += e.time
            elif e.type == midi.MetaEvents.SET_TEMPO:
                changes[tick] = int.from_bytes(e.data, "big")
    return sorted(changes.items())


def midi_seconds(mf) -> float:
    """Length of a MidiFile in seconds: the last event of any track, through the tempo map."""
    from music21 import midi
    end = 0
    for track in mf.tracks:
        end = max(end, sum(e.time for e in track.events if isinstance(e, midi.DeltaTime)))
    seconds, last_tick, last_us = 0.0, 0, 500000
    for tick, us in _tempo_map(mf):
        if tick >= end:
            break
        seconds += (tick - last_tick) * last_us / 1e6 / mf.ticksPerQuarterNote
        last_tick, last_us = tick, us
    return seconds + (end - last_tick) * last_us / 1e6 / mf.ticksPerQuarterNote


# ----------------------------------------------------------------------------- rendering

def render_midi(midi_bytes: bytes, performer: Performer, soundfont: str) -> np.ndarray:
    """float32 `[samples]` mono 16 kHz audio of a MIDI file. Raises RenderError."""
    with tempfile.TemporaryDirectory(prefix="piano_world_") as workdir:
        mid, wav_path = os.path.join(workdir, "in.mid"), os.path.join(workdir, "out.wav")
        with open(mid, "wb") as fh:
            fh.write(midi_bytes)
        reverb = performer.reverb_room
        cmd = ["fluidsynth", "-n", "-i", "-q", "-F", wav_path, "-T", "wav", "-O", "float",
               "-r", str(RENDER_RATE), "-g", str(FLUIDSYNTH_GAIN), "-C", "0", "-R", "0" if reverb is None else "1"]
        if reverb is not None:
            cmd += ["-o", f"synth.reverb.room-size={reverb}"]
        try:
            result = subprocess.run(cmd + [soundfont, mid], capture_output=True, text=True,
                                    timeout=TOOL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RenderError(f"fluidsynth ran over {TOOL_TIMEOUT_S} s") from None
        except FileNotFoundError:
            raise RenderError("fluidsynth is not on PATH") from None
        try:
            return load_audio(wav_path, SAMPLE_RATE)
        except AudioError as e:
            tail = " ".join((result.stderr or "").split()[-20:])
            raise RenderError(f"fluidsynth (exit {result.returncode}) gave no audio: {e.reason} {tail}".strip()) from None
