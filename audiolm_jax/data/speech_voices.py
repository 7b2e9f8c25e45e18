"""The voices of the speech small world and how each one says a verse (with phone timings).

A voice is a base synthesizer voice (flite kal16/rms/slt/awb; festival kal/ked diphones and the
slt HTS voice) plus optional variants: sox pitch shift (cents, tempo kept), the synthesizer's own
duration stretch (rate), and a sox reverb "room". Variants of one base voice stay close for a
speaker encoder, so `source_speaker` names the recorded person behind each base voice: flite
kal16 and festival kal are both Kal, flite slt and festival slt-hts both SLT. Summaries count
voices, base voices and source speakers separately.

The held-out voices (awb, ked) are whole base voices whose recorded speakers never occur in train.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from typing import Sequence

import numpy as np

from audiolm_jax.audio import SAMPLE_RATE, AudioError, audio_info, load_audio

PEAK_LEVEL = 0.5  # Every utterance is peak-normalised here: level is not a speaker cue.
MIN_DURATION_S = 0.3
SILENCE_RMS = 1e-4
ROOM_EFFECT = ("reverb", "45", "50", "75")  # sox: reverberance %, HF damping %, room scale %.
TOOL_TIMEOUT_S = 120

Timing = tuple[str, float, float]  # (label, start_s, end_s)


@dataclasses.dataclass(frozen=True)
class Voice:
    name: str  # speaker id in the corpus: no '-' (it separates utterance-id fields)
    engine: str  # "flite" | "festival"
    base: str  # flite -voice name, or the festival voice without "voice_"
    source_speaker: str  # the recorded person behind the base voice
    pitch_cents: int = 0
    stretch: float = 1.0  # > 1 speaks slower
    room: bool = False
    heldout: bool = False

    @property
    def base_voice(self) -> str:
        return f"{self.engine}_{self.base}"

    @property
    def is_variant(self) -> bool:
        return self.pitch_cents != 0 or self.stretch != 1.0 or self.room

    def describe(self) -> dict:
        return {"name": self.name, "engine": self.engine, "base_voice": self.base_voice,
                "source_speaker": self.source_speaker, "pitch_cents": self.pitch_cents,
                "duration_stretch": self.stretch, "room": self.room, "variant": self.is_variant,
                "heldout": self.heldout}


VOICES: tuple[Voice, ...] = (
    Voice("flite_kal16", "flite", "kal16", "kal"),
    Voice("flite_kal16_low_room", "flite", "kal16", "kal", pitch_cents=-250, room=True),
    Voice("flite_rms", "flite", "rms", "rms"),
    Voice("flite_rms_fast_high", "flite", "rms", "rms", pitch_cents=200, stretch=0.85),
    Voice("flite_slt", "flite", "slt", "slt"),
    Voice("flite_slt_high_slow", "flite", "slt", "slt", pitch_cents=300, stretch=1.15),
    Voice("festival_kal", "festival", "kal_diphone", "kal"),
    Voice("festival_kal_slow_high", "festival", "kal_diphone", "kal", pitch_cents=200, stretch=1.2),
    Voice("festival_slt_hts", "festival", "cmu_us_slt_arctic_hts", "slt"),
    Voice("festival_slt_hts_low_room", "festival", "cmu_us_slt_arctic_hts", "slt",
          pitch_cents=-200, room=True),
    Voice("flite_awb", "flite", "awb", "awb", heldout=True),
    Voice("festival_ked", "festival", "ked_diphone", "ked", heldout=True),
)


def voice_counts(voices: Sequence[Voice]) -> dict:
    """Honest counts: voices, distinct base voices, variants, distinct recorded speakers."""
    return {"voices": len(voices), "base_voices": len({v.base_voice for v in voices}),
            "variants": sum(v.is_variant for v in voices),
            "source_speakers": len({v.source_speaker for v in voices})}


class SynthesisError(ValueError):
    """A verse this voice could not say; `kind` labels the skip in the summary."""

    def __init__(self, kind: str, reason: str):
        self.kind, self.reason = kind, reason
        super().__init__(f"{kind}: {reason}")

    def __reduce__(self):
        return (type(self), (self.kind, self.reason))


@dataclasses.dataclass(frozen=True)
class Synthesis:
    """wav: float32 `[samples]` at 16 kHz; phones/words: (label, start_s, end_s), ms precision."""

    wav: np.ndarray
    phones: list[Timing]
    words: list[Timing] | None


def synthesize(voice: Voice, text: str, words: Sequence[str], workdir: str) -> Synthesis:
    """Say `text` (the TTS form) with `voice`; `words` are its transcript words (for flite's word
    timings). Temporary files go to `workdir`. Raises SynthesisError."""
    dry = os.path.join(workdir, "dry.wav")
    if voice.engine == "flite":
        phones, word_times = _flite(voice, text, words, dry)
    elif voice.engine == "festival":
        phones, word_times = _festival(voice, text, dry, workdir)
        word_times = relabel_words(word_times, words)
    else:
        raise ValueError(f"voice {voice.name}: unknown engine {voice.engine!r}; use flite or festival")
    try:
        dry_info = audio_info(dry)
        wav = load_audio(dry) if not (voice.pitch_cents or voice.room) else _with_effects(voice, dry, workdir)
    except AudioError as e:
        raise SynthesisError("synthesis_failed", f"{voice.engine} wrote no usable audio ({e.reason})") from None
    # Effects may add a reverb tail or drift by a few samples; keep the dry length the timings describe.
    n = int(round(dry_info.frames * SAMPLE_RATE / dry_info.sample_rate))
    wav = np.pad(wav[:n], (0, max(0, n - len(wav))))
    duration = len(wav) / SAMPLE_RATE
    if duration < MIN_DURATION_S:
        raise SynthesisError("too_short", f"{duration:.3f} s of audio (< {MIN_DURATION_S} s)")
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64))))
    if rms < SILENCE_RMS:
        raise SynthesisError("silent", f"RMS {rms:.2e} over {duration:.2f} s (< {SILENCE_RMS:.0e})")
    wav = (wav * (PEAK_LEVEL / float(np.max(np.abs(wav))))).astype(np.float32)
    phones = clip_timings(phones, duration)
    if not phones:
        raise SynthesisError("no_timings", f"{voice.engine} reported no phone timings")
    return Synthesis(wav, phones, clip_timings(word_times, duration) if word_times else None)


def clip_timings(timings: Sequence[Timing], duration: float) -> list[Timing]:
    """Clamp (label, start, end) to [0, duration], round to ms, drop empty items.

    flite kal16 reports its final pause ~0.1 s longer than the audio it writes (its onsets match
    the audio), so the end is clamped rather than the whole sequence rescaled.
    """
    out = []
    for label, start, end in timings:
        start, end = round(min(max(start, 0.0), duration), 3), round(min(max(end, 0.0), duration), 3)
        if end > start:
            out.append((label, start, end))
    return out


# ----------------------------------------------------------------------------- flite

_PSDUR_ITEM = re.compile(r"^([a-z]+):(\d+(?:\.\d+)?)$")


def parse_psdur(stdout: str) -> list[Timing]:
    """`flite -psdur` prints 'ph:end ph:end ...'; starts are the previous ends."""
    phones, start = [], 0.0
    for token in stdout.split():
        m = _PSDUR_ITEM.match(token)
        if m:
            end = float(m.group(2))
            phones.append((m.group(1), start, end))
            start = end
    return phones


def align_words(phones: Sequence[Timing], word_phones: Sequence[Sequence[str]],
                words: Sequence[str]) -> list[Timing] | None:
    """Word timings from phone timings, given each word's phones (pauses excluded).

    None when the counts disagree (flite's post-lexical rules can add or merge a phone), so a
    wrong alignment is never stored.
    """
    spoken = [p for p in phones if p[0] != "pau"]
    if len(word_phones) != len(words) or sum(map(len, word_phones)) != len(spoken):
        return None
    out, i = [], 0
    for word, wp in zip(words, word_phones):
        if not wp:
            return None
        out.append((word, spoken[i][1], spoken[i + len(wp) - 1][2]))
        i += len(wp)
    return out


def relabel_words(timings: Sequence[Timing], words: Sequence[str]) -> list[Timing] | None:
    """Festival's word timings labelled with the transcript words, or None if the counts differ.

    Festival's words are its tokens after text analysis: "king's" becomes "king" (which holds the
    /z/) plus an "'s" word without segments, dropped here; labels then come from the transcript.
    A different count means it split or merged words otherwise, and nothing is stored.
    """
    timings = [t for t in timings if not t[0].startswith("'")]
    if len(timings) != len(words):
        return None
    return [(w, start, end) for w, (_, start, end) in zip(words, timings)]


def _flite_word_phones(words: Sequence[str]) -> list[list[str]]:
    """Each word's phones from flite's own lexicon/letter-to-sound (`t2p`), one call for all:
    words are spoken as separate sentences so that a pause falls between every two."""
    out = _run(["t2p", " ".join(f"{w.lower()}." for w in words)], "t2p").stdout
    groups, current = [], []
    for ph in out.split():
        if ph == "pau":
            if current:
                groups.append(current)
            current = []
        else:
            current.append(ph)
    if current:
        groups.append(current)
    return groups


def _flite(voice: Voice, text: str, words: Sequence[str], wav_path: str):
    cmd = ["flite", "-voice", voice.base, "-psdur", "-t", text, "-o", wav_path]
    if voice.stretch != 1.0:
        cmd += ["--setf", f"duration_stretch={voice.stretch}"]
    phones = parse_psdur(_run(cmd, "flite").stdout)
    word_times = align_words(phones, _flite_word_phones(words), words) if words else None
    return phones, word_times


# ----------------------------------------------------------------------------- festival

def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival_script(voice: Voice, text: str, wav_path: str, timings_path: str) -> str:
    """Scheme for `festival --batch`: synthesize one utterance, save the wave and a timings file
    with 'S phone start end' and 'W word start end' lines."""
    return "\n".join([
        f"(voice_{voice.base})",
        f"(Parameter.set 'Duration_Stretch {voice.stretch})",
        f"(set! utt1 (Utterance Text {_scheme_string(text)}))",
        "(utt.synth utt1)",
        f"(utt.save.wave utt1 {_scheme_string(wav_path)} 'riff)",
        f"(set! fd (fopen {_scheme_string(timings_path)} \"w\"))",
        '(mapcar (lambda (s) (format fd "S %s %f %f\\n" (item.name s) (item.feat s "segment_start") '
        '(item.feat s "end"))) (utt.relation.items utt1 \'Segment))',
        '(mapcar (lambda (w) (format fd "W %s %f %f\\n" (item.name w) (item.feat w "word_start") '
        '(item.feat w "word_end"))) (utt.relation.items utt1 \'Word))',
        "(fclose fd)",
        "",
    ])


def parse_festival_timings(text: str) -> tuple[list[Timing], list[Timing]]:
    phones, words = [], []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] in ("S", "W"):
            item = (parts[1] if parts[0] == "S" else parts[1].upper(), float(parts[2]), float(parts[3]))
            (phones if parts[0] == "S" else words).append(item)
    return phones, words


def _festival(voice: Voice, text: str, wav_path: str, workdir: str):
    timings_path = os.path.join(workdir, "timings.txt")
    script = os.path.join(workdir, "say.scm")
    with open(script, "w", encoding="utf-8") as fh:
        fh.write(festival_script(voice, text, wav_path, timings_path))
    result = _run(["festival", "--batch", script], "festival")
    if not os.path.isfile(timings_path):
        tail = " ".join((result.stderr or result.stdout).split()[-30:])
        raise SynthesisError("synthesis_failed", f"festival voice_{voice.base} wrote no output ({tail}); "
                                                 f"is festvox for {voice.base} installed?")
    with open(timings_path, encoding="utf-8") as fh:
        return parse_festival_timings(fh.read())


# ----------------------------------------------------------------------------- effects, tools

def _with_effects(voice: Voice, dry: str, workdir: str) -> np.ndarray:
    wet = os.path.join(workdir, "wet.wav")
    effects = []
    if voice.pitch_cents:
        effects += ["pitch", str(voice.pitch_cents)]
    if voice.room:
        effects += list(ROOM_EFFECT)
    # -D: no dither, so the output is a pure function of the input (deterministic corpora).
    _run(["sox", "-D", "-V1", dry, wet, *effects], "sox")
    return load_audio(wet)


def _run(cmd: list[str], tool: str) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    except FileNotFoundError:
        raise SynthesisError("tool_missing", f"`{tool}` is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise SynthesisError("synthesis_failed", f"{tool} ran over {TOOL_TIMEOUT_S} s") from None
    if result.returncode != 0:
        tail = " ".join(result.stderr.split()[-30:])
        raise SynthesisError("synthesis_failed", f"{tool} exited with {result.returncode}: {tail}")
    return result
