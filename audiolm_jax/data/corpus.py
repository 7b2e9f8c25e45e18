"""List the utterances of an audio tree: which files, which split/speaker/group, which transcript.

Pure listing (no audio is decoded), so it is cheap on a 60k-hour tree and shared by the TF-free
reader and the TFDS builders. Layouts (see the corpus contract):

  libri_light  {root}/{split}/{speaker}/{book}/{name}.flac    (+ {name}.json, + trans.txt)
  librispeech  {root}/{split}/{speaker}/{chapter}/{speaker}-{chapter}-{utt}.flac
               (+ {speaker}-{chapter}.trans.txt)
  piano        {root}/{split}/{performer}/{piece}/{name}.flac  (+ {name}.mid, {name}.json)

`speaker` is the second level (the performer for piano) and `group` the third (book, chapter,
piece). Audio may be FLAC, WAV, OGG or Opus (`benchmarks/pack_corpus.py` transcodes a tree to
Opus and leaves the `.flac` names inside its JSON manifests: `find_audio` resolves them).
Decoding problems are the reader's business; listing problems that do not stop the scan (an audio
file at the wrong depth, unreadable JSON) are kept in `CorpusIndex.problems` with a reason.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter
from typing import Iterator, Mapping, Sequence

log = logging.getLogger(__name__)

LAYOUTS = ("libri_light", "librispeech", "piano")
AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".opus")
_PATTERNS = {
    "libri_light": "{root}/{split}/{speaker}/{book}/{name}.flac (+ {name}.json)",
    "librispeech": "{root}/{split}/{speaker}/{chapter}/{speaker}-{chapter}-{utt}.flac "
                   "(+ {speaker}-{chapter}.trans.txt)",
    "piano": "{root}/{split}/{performer}/{piece}/{name}.flac (+ {name}.mid, {name}.json)",
}
_AUDIO_DEPTH = 4  # split / speaker / group / file


class CorpusLayoutError(ValueError):
    """The tree at `root` does not have the expected layout (or is empty)."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One utterance. `path` is absolute; `text` is None where the tree has no transcript."""

    id: str
    path: str
    split: str
    speaker: str
    group: str
    text: str | None = None
    meta_path: str | None = None


@dataclasses.dataclass(frozen=True)
class CorpusIndex:
    """The examples of a tree, sorted by (split, id); ids are unique within a split."""

    root: str
    layout: str
    examples: tuple[Example, ...]
    problems: Mapping[str, str] = dataclasses.field(default_factory=dict)  # path -> reason

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(sorted({e.split for e in self.examples}))

    def split(self, name: str) -> tuple[Example, ...]:
        """The examples of one split, in index order."""
        if name not in self.splits:
            raise KeyError(f"split {name!r} is not in the {self.layout} tree at {self.root}; "
                           f"it has {list(self.splits)}")
        return tuple(e for e in self.examples if e.split == name)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)


def scan_corpus(root: str | os.PathLike, layout: str = "libri_light",
                splits: Sequence[str] | None = None) -> CorpusIndex:
    """Lists every audio file of `root` laid out as `layout`, restricted to `splits` if given.

    Raises `CorpusLayoutError` naming the root and the expected layout when the tree is empty,
    misses a requested split, or has no audio at the layout's depth; `FileNotFoundError` when
    `root` is not a directory.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown corpus layout {layout!r}; use one of {LAYOUTS}")
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise FileNotFoundError(f"corpus root {root} is not a directory; point `root` at the "
                                f"folder holding the split folders ({_PATTERNS[layout]})")
    present = sorted(d for d in _visible(os.listdir(root)) if os.path.isdir(os.path.join(root, d)))
    if splits is not None:
        missing = [s for s in splits if s not in present]
        if missing:
            raise CorpusLayoutError(f"{root}: split(s) {missing} not found; the tree has split "
                                    f"folders {present} (expected {_PATTERNS[layout]})")
        present = [s for s in present if s in splits]

    problems: dict[str, str] = {}
    found: list[tuple[str, Example]] = []  # (stem, example with id unset)
    for split in present:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, split)):
            dirnames[:] = sorted(_visible(dirnames))
            rel = os.path.relpath(dirpath, root).split(os.sep)
            audio = sorted(f for f in _visible(filenames) if is_audio_name(f))
            if not audio:
                continue
            if len(rel) + 1 != _AUDIO_DEPTH:
                for f in audio:
                    problems[os.path.join(dirpath, f)] = (
                        f"audio at the wrong depth for layout {layout!r}: expected "
                        f"{_PATTERNS[layout]}; ignored")
                continue
            _, speaker, group = rel
            transcripts = _read_transcripts(dirpath, problems)
            for f in audio:
                stem = os.path.splitext(f)[0]
                meta_path = os.path.join(dirpath, stem + ".json")
                meta_path = meta_path if os.path.isfile(meta_path) else None
                text = _text_for(layout, stem, transcripts, meta_path, problems)
                found.append((stem, Example(id="", path=os.path.join(dirpath, f), split=split,
                                            speaker=speaker, group=group, text=text,
                                            meta_path=meta_path)))
    for path, reason in problems.items():
        # A name that is not UTF-8 (surrogate escapes from os.walk) would make the log handler
        # fail on encoding and drop the warning: show its undecodable bytes as \x escapes.
        log.warning("%s: %s", os.fsencode(path).decode("utf-8", "backslashreplace"), reason)
    if not found:
        hint = (f"; {len(problems)} audio file(s) at other depths, e.g. {next(iter(problems))} "
                "-- is `root` one level too high or low, or the layout wrong?") if problems else ""
        raise CorpusLayoutError(
            f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {root} for layout {layout!r} "
            f"(splits {present}); expected {_PATTERNS[layout]}{hint}")
    examples = []
    for split in present:  # Unique per split: an id must not depend on which splits were scanned.
        in_split = [(stem, e) for stem, e in found if e.split == split]
        ids = _unique_ids(in_split, root)
        examples += [dataclasses.replace(e, id=i) for (_, e), i in zip(in_split, ids)]
    examples.sort(key=lambda e: (e.split, e.id))
    return CorpusIndex(root=root, layout=layout, examples=tuple(examples), problems=problems)


def is_audio_name(name: str | os.PathLike) -> bool:
    """Whether a file name has one of the audio extensions a corpus may use (any case)."""
    return os.path.splitext(os.fspath(name))[1].lower() in AUDIO_EXTENSIONS


def find_audio(path: str | os.PathLike) -> str | None:
    """The audio file for `path`, a file name with or without its audio extension: `path` itself
    if it is a file, else the first existing `{stem}{ext}` for `ext` in AUDIO_EXTENSIONS; None if
    there is none.

    A tree transcoded to another codec keeps every stem, so a name recorded elsewhere (an ABX
    sidecar beside `x.flac`, a pairs manifest naming `x.flac`) still finds `x.opus`.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    stem = os.path.splitext(path)[0] if is_audio_name(path) else path
    for ext in AUDIO_EXTENSIONS:
        if os.path.isfile(stem + ext):
            return stem + ext
    return None


def _visible(names):
    # Hidden files are editor/atomic-write leftovers (".x.flac.tmp"), never corpus members.
    return [n for n in names if not n.startswith(".")]


def _unique_ids(found: list[tuple[str, Example]], root: str) -> list[str]:
    """The file stem; where stems collide, the path relative to `root` without (then with) suffix.

    Stems are the utterance ids of every supported layout; the fallback only keeps odd trees usable.
    """
    rel = [os.path.relpath(e.path, root).replace(os.sep, "/") for _, e in found]
    candidates = [[stem, os.path.splitext(r)[0], r] for (stem, _), r in zip(found, rel)]
    ids = [c[0] for c in candidates]
    for level in (1, 2):
        counts = Counter(ids)
        ids = [c[level] if counts[i] > 1 else i for i, c in zip(ids, candidates)]
    return ids


def _read_transcripts(book_dir: str, problems: dict[str, str]) -> dict[str, str]:
    """utt_id -> text from every `*.trans.txt` in `book_dir` (LibriSpeech format)."""
    out: dict[str, str] = {}
    for name in sorted(os.listdir(book_dir)):
        if not name.endswith(".trans.txt"):
            continue
        path = os.path.join(book_dir, name)
        try:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    utt, _, text = line.strip().partition(" ")
                    if utt:
                        out[utt] = text.strip()
        except (OSError, UnicodeDecodeError) as e:
            problems[path] = f"unreadable transcript ({e}); its utterances get no text"
    return out


def _text_for(layout: str, stem: str, transcripts: Mapping[str, str], meta_path: str | None,
              problems: dict[str, str]) -> str | None:
    """LibriSpeech's canonical text is trans.txt; Libri-Light's is the JSON; piano has none."""
    if layout == "piano":
        return None
    meta_text = _json_text(meta_path, problems) if meta_path else None
    if layout == "librispeech":
        return transcripts.get(stem, meta_text)
    return meta_text if meta_text is not None else transcripts.get(stem)


def _json_text(meta_path: str, problems: dict[str, str]) -> str | None:
    try:
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
        problems[meta_path] = f"unreadable metadata JSON ({e}); text taken from trans.txt if any"
        return None
    text = meta.get("text") if isinstance(meta, dict) else None
    return text if isinstance(text, str) else None
