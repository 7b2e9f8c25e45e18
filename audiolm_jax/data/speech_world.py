"""The speech small world: synthetic voices reading the King James Bible, laid out like Libri-Light.

    {root}/{split}/{speaker}/{book}/{speaker}-{book}-{NNNN}.flac   16 kHz mono
                                    {speaker}-{book}-{NNNN}.json   text, voice, phone/word timings
                                    {speaker}-{book}.trans.txt     LibriSpeech-style transcripts
    {root}/summary.json

Splits: `train` (train voices x train books), `heldout_voices` (two whole base voices, awb and
ked, whose recorded speakers never occur in train, reading train books) and `heldout_books`
(train voices reading two books never read in train); `hours` is shared about 80/10/10.

The plan (which voice reads which verses, and the utterance ids) is a pure function of the seed
and `hours`, made before any audio exists; every utterance is then a pure function of its plan
entry. So a build is byte-identical for any number of workers, and a rerun only synthesizes
utterances that are missing or invalid (a killed build resumes).

Like an audiobook, a (voice, book) pair reads contiguous verses from the start of a chapter on
(running into the next chapter when its budget allows); verses with a word the ASR lexicon cannot
say are left out of the reading and listed as skipped, as are verses whose synthesis fails.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import tempfile
import time
from collections import Counter, defaultdict
from typing import Sequence

from audiolm_jax.audio import SAMPLE_RATE, save_audio
from audiolm_jax.data import bible_text
from audiolm_jax.data.bible_text import Verse
from audiolm_jax.data.speech_voices import VOICES, SynthesisError, Voice, synthesize, voice_counts
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
    write_json_atomic,
    write_summary,
    write_text_atomic,
)

log = logging.getLogger(__name__)

BUILDER_VERSION = "speech_world/1"  # Bump when the audio or JSON of an utterance changes.
SPLITS = ("train", "heldout_voices", "heldout_books")
SPLIT_SHARES = {"train": 0.8, "heldout_voices": 0.1, "heldout_books": 0.1}
N_HELDOUT_BOOKS = 2
# Held-out books are mid-sized (kept verses): Psalms or Genesis would take too much from train,
# Obadiah could not fill its share on bigger builds.
HELDOUT_BOOK_VERSES = (100, 700)
MAX_SESSION_S = 600.0  # A voice reads at most ~10 min from one book before moving to another.
# Planning estimate of a verse's duration (measured on flite slt/kal16 and festival slt-hts).
SECONDS_BASE, SECONDS_PER_CHAR = 0.3, 0.058
TOOLS = {"bible": "bible-kjv", "flite": "flite", "t2p": "flite", "festival": "festival", "sox": "sox"}


@dataclasses.dataclass(frozen=True)
class UtteranceTask:
    """One verse read by one voice, with where it goes."""

    root: str
    split: str
    voice: Voice
    verse: Verse
    utt_id: str

    @property
    def book_dir(self) -> str:
        return os.path.join(self.root, self.split, self.voice.name, self.verse.book_id)

    @property
    def flac_path(self) -> str:
        return os.path.join(self.book_dir, self.utt_id + ".flac")

    @property
    def json_path(self) -> str:
        return os.path.join(self.book_dir, self.utt_id + ".json")

    def recipe(self) -> dict:
        return {"builder": BUILDER_VERSION, "voice": self.voice.describe(), "text": self.verse.text,
                "sample_rate": SAMPLE_RATE}


@dataclasses.dataclass(frozen=True)
class UtteranceDone:
    utt_id: str
    status: str  # "built" | "reused"
    duration: float


@dataclasses.dataclass(frozen=True)
class SpeechPlan:
    tasks: tuple[UtteranceTask, ...]
    skipped: tuple[Skipped, ...]  # verses left out before synthesis (out of lexicon)
    heldout_books: tuple[str, ...]
    train_books: tuple[str, ...]
    verses_in_lexicon: int


# ----------------------------------------------------------------------------- planning

def estimated_seconds(verse: Verse, voice: Voice) -> float:
    return (SECONDS_BASE + SECONDS_PER_CHAR * len(verse.text)) * voice.stretch


def plan_speech_world(root: str, verses: Sequence[Verse], lexicon: frozenset[str], hours: float,
                      seed: int, voices: Sequence[Voice] = VOICES) -> SpeechPlan:
    """Which voice reads which verses into which split; pure in (verses, lexicon, hours, seed)."""
    if not hours > 0:
        raise ValueError(f"hours must be > 0, got {hours!r}. Fix: pass e.g. hours=0.5")
    rng = random.Random(f"speech_world:{seed}")
    chapters: dict[tuple[str, int], list[Verse]] = defaultdict(list)
    for v in verses:
        chapters[(v.book_id, v.chapter)].append(v)
    oov = {v: bible_text.out_of_lexicon(bible_text.transcript_words(v.text), lexicon) for v in verses}
    heldout_books = _pick_heldout_books(verses, oov, rng)
    train_books = tuple(b for b in dict.fromkeys(v.book_id for v in verses) if b not in heldout_books)

    state = _PlanState(root, chapters, oov)
    for split in SPLITS:
        split_voices = [v for v in voices if v.heldout == (split == "heldout_voices")]
        if not split_voices:
            raise ValueError(f"no voices for split {split}. Fix: mark some voices heldout=True and keep "
                             f"some False")
        books = set(heldout_books if split == "heldout_books" else train_books)
        keys = [k for k in chapters if k[0] in books]
        budget = hours * 3600.0 * SPLIT_SHARES[split] / len(split_voices)
        for voice in split_voices:
            _read_like_an_audiobook(state, rng, split, voice, keys, budget)
    return SpeechPlan(tuple(state.tasks), tuple(state.skipped), heldout_books, train_books,
                      sum(not words for words in oov.values()))


@dataclasses.dataclass
class _PlanState:
    root: str
    chapters: dict  # (book_id, chapter) -> [Verse]
    oov: dict  # Verse -> out-of-lexicon words
    used: set = dataclasses.field(default_factory=set)  # chapters anybody read
    read_by: set = dataclasses.field(default_factory=set)  # (voice, chapter) pairs
    numbers: Counter = dataclasses.field(default_factory=Counter)  # (voice, book) -> next utt number
    tasks: list = dataclasses.field(default_factory=list)
    skipped: list = dataclasses.field(default_factory=list)


def _read_like_an_audiobook(st: _PlanState, rng: random.Random, split: str, voice: Voice,
                            keys: Sequence[tuple[str, int]], budget: float) -> None:
    """Sessions of contiguous verses until ~`budget` seconds are planned for `voice`.

    A session starts at a chapter nobody has read (once all are read: one this voice has not),
    runs on into the following chapters and ends after MAX_SESSION_S. A voice never reads a
    chapter twice (its audio would be identical), so every session makes progress.
    """
    remaining, said = budget, 0
    while remaining > 0:
        fresh = [k for k in keys if k not in st.used]
        pool = fresh or [k for k in keys if (voice.name, k) not in st.read_by]
        if not pool:
            return  # This voice has read everything it may read: the split stays under budget.
        key = pool[rng.randrange(len(pool))]
        session_left = min(remaining, MAX_SESSION_S)
        while key is not None and session_left > 0:
            st.used.add(key)
            st.read_by.add((voice.name, key))
            for verse in st.chapters[key]:
                if session_left <= 0:
                    break
                if st.oov[verse]:
                    st.skipped.append(Skipped(f"{voice.name} {verse.ref}", "out_of_lexicon",
                                              "not in the ASR lexicon: " + " ".join(st.oov[verse])))
                    continue
                seconds = estimated_seconds(verse, voice)
                if said and remaining < seconds / 2:  # Closer to the budget without this verse.
                    return
                n = st.numbers[(voice.name, verse.book_id)]
                st.numbers[(voice.name, verse.book_id)] += 1
                st.tasks.append(UtteranceTask(st.root, split, voice, verse,
                                              f"{voice.name}-{verse.book_id}-{n:04d}"))
                session_left -= seconds
                remaining -= seconds
                said += 1
            nxt = (key[0], key[1] + 1)
            readable = nxt in st.chapters and (voice.name, nxt) not in st.read_by
            key = nxt if readable and (nxt not in st.used or not fresh) else None


def _pick_heldout_books(verses: Sequence[Verse], oov: dict, rng: random.Random) -> tuple[str, ...]:
    kept = Counter(v.book_id for v in verses if not oov[v])
    books = [b for b in dict.fromkeys(v.book_id for v in verses) if kept[b] > 0]
    if len(books) <= N_HELDOUT_BOOKS:
        raise ValueError(f"only {len(books)} book(s) have verses the lexicon can say; need more than "
                         f"{N_HELDOUT_BOOKS} to hold books out. Fix: pass more verses")
    lo, hi = HELDOUT_BOOK_VERSES
    candidates = [b for b in books if lo <= kept[b] <= hi]
    if len(candidates) < N_HELDOUT_BOOKS:  # Tiny test texts: any book will do.
        candidates = books[1:]
    return tuple(rng.sample(candidates, N_HELDOUT_BOOKS))


# ----------------------------------------------------------------------------- one utterance

def build_utterance(task: UtteranceTask) -> UtteranceDone | Skipped:
    """Synthesize and write one utterance (FLAC, then its JSON), unless a valid one exists."""
    digest = recipe_digest(task.recipe())
    meta = existing_output(task.flac_path, task.json_path, digest)
    if meta is not None:
        return UtteranceDone(task.utt_id, "reused", float(meta["duration"]))
    words = bible_text.transcript_words(task.verse.text)
    with tempfile.TemporaryDirectory(prefix="speech_world_") as workdir:
        try:
            syn = synthesize(task.voice, bible_text.tts_text(task.verse.text), words, workdir)
        except SynthesisError as e:
            return Skipped(f"{task.utt_id} ({task.verse.ref})", e.kind, e.reason)
    duration = len(syn.wav) / SAMPLE_RATE
    save_audio(task.flac_path, syn.wav, SAMPLE_RATE)
    meta = {
        "text": task.verse.text,
        "transcript": " ".join(words),
        "voice": task.voice.name,
        "speaker": task.voice.name,
        "voice_info": task.voice.describe(),
        "book": task.verse.book_id,
        "book_name": task.verse.book,
        "chapter": task.verse.chapter,
        "verse": task.verse.verse,
        "duration": duration,
        "sample_rate": SAMPLE_RATE,
        "phones": [list(p) for p in syn.phones],
        "recipe": digest,
    }
    if syn.words is not None:
        meta["words"] = [list(w) for w in syn.words]
    write_json_atomic(task.json_path, meta, compact=True)  # Last: its presence marks the utterance complete.
    return UtteranceDone(task.utt_id, "built", duration)


# ----------------------------------------------------------------------------- the build

def build_speech_world(out_dir: str, hours: float = 0.5, seed: int = 0, workers: int = 2,
                       progress: bool = True, verses: Sequence[Verse] | None = None,
                       lexicon_path: str | None = None) -> dict:
    """Build (or resume) the speech small world under `out_dir`; returns the summary, also
    written to `{out_dir}/summary.json`. `verses` defaults to the whole KJV (`bible` tool)."""
    start = time.monotonic()
    require_tools({k: v for k, v in TOOLS.items() if verses is None or k != "bible"})
    root = os.path.abspath(out_dir)
    os.makedirs(root, exist_ok=True)
    verses = list(verses) if verses is not None else bible_text.read_bible()
    lexicon_path = lexicon_path or bible_text.default_lexicon_path()
    lexicon = bible_text.load_lexicon(lexicon_path)
    plan = plan_speech_world(root, verses, lexicon, hours, seed)
    sweep_temp_files(root, SPLITS)  # left by a killed build

    results = parallel_map(build_utterance, plan.tasks, workers=workers, desc="speech world",
                           progress=progress, unit="utt")
    done: list[tuple[UtteranceTask, UtteranceDone]] = []
    skipped = list(plan.skipped)
    for task, result in zip(plan.tasks, results):
        if isinstance(result, UtteranceDone):
            done.append((task, result))
        elif isinstance(result, Skipped):
            skipped.append(result)
        else:
            error = result.error if isinstance(result, TaskFailed) else repr(result)
            skipped.append(Skipped(f"{task.utt_id} ({task.verse.ref})", "error", error))
    _write_transcripts(done)
    summary = _summary(root, plan, done, skipped, verses, lexicon_path, hours, seed)
    summary["build"] = build_record([r.status for _, r in done], summary["hours"]["total"],
                                    time.monotonic() - start, workers)
    write_summary(root, summary)
    return summary


def _write_transcripts(done: Sequence[tuple[UtteranceTask, UtteranceDone]]) -> None:
    """`{speaker}-{book}.trans.txt` in each book dir: `{utt_id} {UPPERCASE TEXT}`, sorted by id."""
    lines = defaultdict(list)
    for task, _ in done:
        lines[(task.book_dir, task.voice.name, task.verse.book_id)].append(
            f"{task.utt_id} {bible_text.transcript(task.verse.text)}")
    for (book_dir, speaker, book), book_lines in lines.items():
        write_text_atomic(os.path.join(book_dir, f"{speaker}-{book}.trans.txt"),
                          "\n".join(sorted(book_lines)) + "\n")


def _summary(root, plan: SpeechPlan, done, skipped, verses, lexicon_path, target_hours, seed) -> dict:
    seconds = Counter()
    utts = Counter()
    per_voice = defaultdict(lambda: {"utterances": 0, "hours": 0.0, "books": set(), "splits": set()})
    for task, result in done:
        seconds[task.split] += result.duration
        utts[task.split] += 1
        pv = per_voice[task.voice.name]
        pv["utterances"] += 1
        pv["hours"] += result.duration / 3600.0
        pv["books"].add(task.verse.book_id)
        pv["splits"].add(task.split)
    voices = list(dict.fromkeys(task.voice for task in plan.tasks))  # plan order: train, then held out
    voice_list = [dict(v.describe(), utterances=per_voice[v.name]["utterances"],
                       hours=round(per_voice[v.name]["hours"], 4),
                       books=sorted(per_voice[v.name]["books"]), splits=sorted(per_voice[v.name]["splits"]))
                  for v in voices]
    by_split = {s: sorted({t.voice.name for t, _ in done if t.split == s}) for s in SPLITS}
    books_by_split = {s: sorted({t.verse.book_id for t, _ in done if t.split == s}) for s in SPLITS}
    stale = _stale_files(root, {t.utt_id for t, _ in done})
    if stale:
        log.warning("%s: %d file(s) from an earlier build are not part of this one (e.g. %s); "
                    "delete the directory and rebuild for a clean tree", root, len(stale), stale[0])
    return {
        "corpus": "speech_world",
        "builder": BUILDER_VERSION,
        "seed": seed,
        "hours_target": target_hours,
        "sample_rate": SAMPLE_RATE,
        "hours": dict({s: hours(seconds[s]) for s in SPLITS}, total=hours(sum(seconds.values()))),
        "utterances": dict({s: utts[s] for s in SPLITS}, total=sum(utts.values())),
        "voices": dict(voice_counts(voices), by_split=by_split, list=voice_list,
                       train=voice_counts([v for v in voices if not v.heldout]),
                       heldout=voice_counts([v for v in voices if v.heldout])),
        "books": dict(books_by_split, heldout=list(plan.heldout_books)),
        "lexicon": {"path": lexicon_path, "verses": len(verses), "verses_in_lexicon": plan.verses_in_lexicon},
        "skipped": skip_summary(skipped),
        "stale_files": len(stale),
    }


def _stale_files(root: str, utt_ids: set[str]) -> list[str]:
    """Audio files under the split dirs that this build did not plan (left by another build)."""
    stale = []
    for split in SPLITS:
        for dirpath, _, files in os.walk(os.path.join(root, split)):
            stale += [os.path.join(dirpath, f) for f in sorted(files)
                      if f.endswith(".flac") and f[:-5] not in utt_ids]
    return sorted(stale)
