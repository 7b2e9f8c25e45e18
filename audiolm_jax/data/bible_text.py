"""The text of the speech small world: the King James Bible (Debian's bible-kjv) and a lexicon filter.

book = "book", chapter = utterance group, verse = utterance. Verses with a word that the ASR
lexicon (CMUdict as shipped in pocketsphinx's wheel) cannot say -- name lists, archaic forms such
as "saith" -- are dropped, so the ASR-based evaluations measure the speech, not the lexicon.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
from typing import Iterable, Sequence

ALL_VERSES_SPEC = "gen1:1-rev22:21"
_VERSE_LINE = re.compile(r"^  (\d+) (.+)$")  # "  3 And God said, Let there be light: ..."
_CHAPTER_LINE = re.compile(r"^(\S.*) (\d+)$")  # "1 Samuel 3"
_NOT_WORD = re.compile(r"[^A-Za-z']+")
_ALL_CAPS = re.compile(r"\b[A-Z]{2,}\b")
_ALT_PRONUNCIATION = re.compile(r"\(\d+\)$")


@dataclasses.dataclass(frozen=True)
class Verse:
    book: str  # "1 Samuel"
    book_id: str  # "1samuel": a path component, no spaces or '-'
    chapter: int
    verse: int
    text: str  # as printed by `bible`, punctuation and case kept

    @property
    def ref(self) -> str:
        return f"{self.book} {self.chapter}:{self.verse}"


def book_id(book: str) -> str:
    """'Song of Solomon' -> 'songofsolomon' (safe in paths and in '-'-separated utterance ids)."""
    return re.sub(r"[^a-z0-9]", "", book.lower())


def parse_bible_output(lines: Iterable[str]) -> list[Verse]:
    """Verses from `bible -l100000` output: chapter headers, then one indented line per verse."""
    verses: list[Verse] = []
    book, chapter = None, None
    for line in lines:
        line = line.rstrip("\n")
        verse = _VERSE_LINE.match(line)
        if verse and book is not None:
            verses.append(Verse(book, book_id(book), chapter, int(verse.group(1)), verse.group(2).strip()))
            continue
        header = _CHAPTER_LINE.match(line.strip())
        if header and not line.startswith(" "):
            book, chapter = header.group(1), int(header.group(2))
    return verses


def read_bible(spec: str = ALL_VERSES_SPEC) -> list[Verse]:
    """All verses of `spec` (default: the whole Bible, 31,102 verses) through the `bible` tool."""
    try:
        out = subprocess.run(["bible", "-l100000", spec], check=True, capture_output=True,
                             text=True, timeout=120).stdout
    except FileNotFoundError:
        raise RuntimeError("the `bible` command is missing. Fix: apt-get install bible-kjv") from None
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"`bible -l100000 {spec}` failed ({e.stderr.strip()}). "
                           f"Fix: reinstall bible-kjv and bible-kjv-text") from None
    verses = parse_bible_output(out.splitlines())
    if not verses:
        raise RuntimeError(f"`bible -l100000 {spec}` printed no verses. Fix: check the bible-kjv-text "
                           f"package (the verse data) is installed")
    return verses


# ----------------------------------------------------------------------------- text forms

def transcript_words(text: str) -> list[str]:
    """LibriSpeech-style words: uppercase letters and inner apostrophes; '-' splits words.

    "Am I my brother's keeper?" -> ["AM", "I", "MY", "BROTHER'S", "KEEPER"]
    """
    words = (w.strip("'") for w in _NOT_WORD.sub(" ", text).split())
    return [w.upper() for w in words if w]


def transcript(text: str) -> str:
    return " ".join(transcript_words(text))


def tts_text(text: str) -> str:
    """The text given to the synthesizers: 'LORD' -> 'Lord' (flite spells or drops some all-caps
    words, e.g. 'I AM'), '-' -> ' ' (so that the spoken words match the transcript words)."""
    text = _ALL_CAPS.sub(lambda m: m.group(0).capitalize(), text)
    return " ".join(text.replace("-", " ").split())


# ----------------------------------------------------------------------------- lexicon

def default_lexicon_path() -> str:
    """CMUdict as shipped inside the pocketsphinx wheel (found without importing pocketsphinx)."""
    spec = importlib.util.find_spec("pocketsphinx")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pocketsphinx is not installed; its wheel ships the lexicon. "
                           "Fix: pip install pocketsphinx==5.1.1")
    path = os.path.join(list(spec.submodule_search_locations)[0], "model", "en-us", "cmudict-en-us.dict")
    if not os.path.isfile(path):
        raise RuntimeError(f"lexicon {path} not found in the pocketsphinx package. "
                           f"Fix: reinstall pocketsphinx==5.1.1")
    return path


def load_lexicon(path: str | None = None) -> frozenset[str]:
    """The uppercase words of a CMUdict-format file ("word PH ON ES", alternates as "word(2)")."""
    path = path or default_lexicon_path()
    words = set()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            head = line.split(maxsplit=1)
            if head and not line.startswith(";;;"):
                words.add(_ALT_PRONUNCIATION.sub("", head[0]).upper())
    return frozenset(words)


def out_of_lexicon(words: Sequence[str], lexicon: frozenset[str]) -> list[str]:
    """The words (uppercase) the lexicon cannot say, in order, without repeats."""
    return list(dict.fromkeys(w for w in words if w not in lexicon))
