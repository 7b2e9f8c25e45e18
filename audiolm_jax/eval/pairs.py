"""Zero-shot lexical and syntactic probes (AudioLM Table IV analogue): sWUGGY- and sBLIMP-style
minimal pairs spoken by the held-out voices, and their scoring by a language model.

sWUGGY style: a real word vs a non-word that looks like one. Wuggy builds non-words by swapping
sub-syllabic segments for others attested in the same position; `make_nonword` does the same on
letters: one consonant cluster (word-initial, medial or final) is replaced by another cluster
attested in that position in the lexicon, and the result must (a) not be a lexicon word and
(b) use only letter trigrams (with word boundaries) that occur in lexicon words, a cheap
phonotactic-legality check. Both members are spoken by the TTS's letter-to-sound rules, the same
path that reads the corpus (`speech_voices.synthesize`).

sBLIMP style: a grammatical sentence vs a minimally different ungrammatical one, from templates
over words the ASR lexicon knows (phenomena: subject-verb agreement, determiner-noun agreement,
anaphor agreement, auxiliary + participle, determiner-noun order).

Scoring (`score_pairs`): the model picks the member with the higher length-normalised
log-likelihood, sum of log p over the tokens divided by their count (sWUGGY words differ in
length, so raw sums favour the shorter one). Ties count half. Accuracy has a Wilson 95% CI
against chance at 50%. The stage-1 model plugs in as `loglik_fn(wav) -> (sum_log_prob,
num_tokens)` over the semantic tokens of the audio.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import re
import tempfile
from collections import Counter
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from audiolm_jax.eval.stats import accuracy_summary

KINDS = ("swuggy", "sblimp")
MANIFEST = "pairs.json"
_VOWELS = set("aeiouy")
_SUFFIXES = ("s", "es", "ed", "d", "er", "ers", "ing", "ly")
_CLUSTER = re.compile(r"[aeiouy]+|[^aeiouy]+")


# --- sWUGGY-style non-words ---------------------------------------------------------------------

def letter_clusters(word: str) -> list[str]:
    """'strength' -> ['str', 'e', 'ngth']: alternating consonant and vowel letter runs (y is a
    vowel letter except word-initially, where it is a consonant: 'yes' -> ['y', 'e', 's'])."""
    word = word.lower()
    if word.startswith("y") and len(word) > 1:
        rest = _CLUSTER.findall(word[1:])
        if rest and rest[0][0] not in _VOWELS:  # "ytt...": y as the vowel after all
            return _CLUSTER.findall(word)
        return ["y"] + rest
    return _CLUSTER.findall(word)


def _position(i: int, n: int) -> str:
    return "initial" if i == 0 else "final" if i == n - 1 else "medial"


@dataclasses.dataclass(frozen=True)
class Phonotactics:
    """Consonant clusters attested per position, and the letter trigrams of the lexicon."""

    clusters: dict[str, Counter]
    trigrams: frozenset[str]
    words: frozenset[str]

    @classmethod
    def from_words(cls, words: Iterable[str]) -> "Phonotactics":
        clusters = {"initial": Counter(), "medial": Counter(), "final": Counter()}
        trigrams = set()
        kept = set()
        for w in words:
            w = w.lower()
            if not w.isalpha():
                continue
            kept.add(w)
            parts = letter_clusters(w)
            for i, c in enumerate(parts):
                if c[0] not in _VOWELS or (i == 0 and c == "y"):
                    clusters[_position(i, len(parts))][c] += 1
            padded = f"^{w}$"
            trigrams.update(padded[i:i + 3] for i in range(len(padded) - 2))
        return cls(clusters, frozenset(trigrams), frozenset(kept))

    def is_word_form(self, word: str) -> bool:
        """In the lexicon, or an inflection of a lexicon word ("tills" from "till")."""
        if word in self.words:
            return True
        return any(word.endswith(sfx) and word[:-len(sfx)] in self.words
                   for sfx in _SUFFIXES if len(word) > len(sfx) + 2)

    def legal(self, word: str) -> bool:
        padded = f"^{word}$"
        return all(padded[i:i + 3] in self.trigrams for i in range(len(padded) - 2))


def make_nonword(word: str, phonotactics: Phonotactics, rng: random.Random,
                 min_count: int = 150, tries: int = 50) -> str | None:
    """A non-word matched to `word` (one consonant cluster swapped for another attested in the
    same position at least `min_count` times, length within one letter), or None."""
    word = word.lower()
    parts = letter_clusters(word)
    slots = [i for i, c in enumerate(parts) if c[0] not in _VOWELS or (i == 0 and c == "y")]
    if not slots:
        return None
    for _ in range(tries):
        i = rng.choice(slots)
        pool = [c for c, n in phonotactics.clusters[_position(i, len(parts))].items()
                if n >= min_count and c != parts[i] and abs(len(c) - len(parts[i])) <= 1]
        if not pool:
            continue
        candidate = "".join(parts[:i] + [rng.choice(sorted(pool))] + parts[i + 1:])
        if not phonotactics.is_word_form(candidate) and phonotactics.legal(candidate):
            return candidate
    return None


def lexical_pairs(words: Sequence[str], lexicon: Iterable[str], n: int, seed: int = 0,
                  min_letters: int = 4, max_letters: int = 9,
                  min_count: int = 150) -> list[tuple[str, str]]:
    """Up to `n` (word, non-word) pairs from `words` (e.g. the corpus's vocabulary), in a
    deterministic order."""
    phon = Phonotactics.from_words(lexicon)
    rng = random.Random(f"swuggy:{seed}")
    pool = sorted({w.lower() for w in words if w.isalpha() and min_letters <= len(w) <= max_letters
                   and w.lower() in phon.words})
    rng.shuffle(pool)
    out = []
    for w in pool:
        nonword = make_nonword(w, phon, rng, min_count=min_count)
        if nonword is not None:
            out.append((w, nonword))
        if len(out) >= n:
            break
    return out


# --- sBLIMP-style sentences --------------------------------------------------------------------

_NOUNS = [("king", "kings"), ("man", "men"), ("woman", "women"), ("servant", "servants"),
          ("prophet", "prophets"), ("child", "children"), ("priest", "priests"),
          ("shepherd", "shepherds")]
_VERBS = [("speaks", "speak"), ("walks", "walk"), ("comes", "come"), ("goes", "go"),
          ("sings", "sing"), ("weeps", "weep"), ("prays", "pray"), ("waits", "wait")]
_PLACES = ["in the city", "to the people", "before the temple", "by the river", "at the gate",
           "on the mountain"]
# Intransitive uses only, so the grammatical member needs no object.
_PARTICIPLES = [("gone", "went"), ("spoken", "spoke"), ("come", "came"), ("risen", "rose"),
                ("fallen", "fell"), ("arrived", "arrive")]


def syntactic_pairs(n_per_phenomenon: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(grammatical, ungrammatical, phenomenon) triples, `n_per_phenomenon` of each phenomenon."""
    rng = random.Random(f"sblimp:{seed}")
    made: dict[str, list[tuple[str, str]]] = {}
    agreement = []
    for (sg, pl), (v3, vb), place in itertools.product(_NOUNS, _VERBS, _PLACES):
        agreement.append((f"the {sg} {v3} {place}", f"the {sg} {vb} {place}"))
        agreement.append((f"the {pl} {vb} {place}", f"the {pl} {v3} {place}"))
    made["subject_verb_agreement"] = agreement
    made["determiner_noun_agreement"] = (
        [(f"this {sg} {v3} {place}", f"these {sg} {v3} {place}")
         for (sg, _), (v3, _), place in itertools.product(_NOUNS, _VERBS, _PLACES)]
        + [(f"these {pl} {vb} {place}", f"this {pl} {vb} {place}")
           for (_, pl), (_, vb), place in itertools.product(_NOUNS, _VERBS, _PLACES)])
    made["anaphor_agreement"] = (
        [(f"the {pl} washed themselves {place}", f"the {pl} washed himself {place}")
         for (_, pl), place in itertools.product(_NOUNS, _PLACES)]
        + [(f"the {sg} washed himself {place}", f"the {sg} washed themselves {place}")
           for (sg, _), place in itertools.product(_NOUNS, _PLACES) if sg not in ("woman",)])
    made["auxiliary_participle"] = [
        (f"the {sg} has {good} {place}", f"the {sg} has {bad} {place}")
        for (sg, _), (good, bad), place in itertools.product(_NOUNS, _PARTICIPLES, _PLACES)]
    made["determiner_noun_order"] = [
        (f"the {sg} {v3} {place}", f"{sg} the {v3} {place}")
        for (sg, _), (v3, _), place in itertools.product(_NOUNS, _VERBS, _PLACES)]
    out = []
    for phenomenon in sorted(made):
        items = sorted(set(made[phenomenon]))
        rng.shuffle(items)
        out += [(g, b, phenomenon) for g, b in items[:n_per_phenomenon]]
    return out


# --- synthesis -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PairItem:
    """One minimal pair spoken by one voice. Paths are relative to the pairs directory."""

    kind: str  # "swuggy" | "sblimp"
    pair_id: str
    voice: str
    phenomenon: str
    good_text: str
    bad_text: str
    good_path: str
    bad_path: str


@dataclasses.dataclass(frozen=True)
class _SynthTask:
    root: str
    item: PairItem


def _synthesize_pair(task: _SynthTask) -> str | None:
    """Writes both members of one pair; None, or the reason it failed."""
    from audiolm_jax.audio import SAMPLE_RATE, save_audio  # noqa: PLC0415
    from audiolm_jax.data.corpus import find_audio  # noqa: PLC0415
    from audiolm_jax.data.speech_voices import VOICES, SynthesisError, synthesize  # noqa: PLC0415

    voice = {v.name: v for v in VOICES}[task.item.voice]
    with tempfile.TemporaryDirectory(prefix="pairs_") as workdir:
        for text, rel in ((task.item.good_text, task.item.good_path),
                          (task.item.bad_text, task.item.bad_path)):
            path = os.path.join(task.root, rel)
            if find_audio(path):  # also kept: the same stem transcoded (pack_corpus.py)
                continue
            try:
                syn = synthesize(voice, text, [], workdir)
            except SynthesisError as e:
                return f"{rel}: {e}"
            os.makedirs(os.path.dirname(path), exist_ok=True)
            save_audio(path, syn.wav, SAMPLE_RATE)
    return None


def plan_pairs(n_lexical: int, n_syntactic_per_phenomenon: int, voices: Sequence[str],
               vocabulary: Sequence[str], lexicon: Iterable[str], seed: int = 0,
               min_count: int = 150) -> list[PairItem]:
    """Every pair item (both kinds, every voice), paths laid out as {kind}/{voice}/{id}_{good|bad}.flac."""
    items = []
    lexicon = list(lexicon)
    for kind, triples in (
            ("swuggy", [(w, nw, "word_nonword") for w, nw in
                        lexical_pairs(vocabulary, lexicon, n_lexical, seed,
                                      min_count=min_count)]),
            ("sblimp", syntactic_pairs(n_syntactic_per_phenomenon, seed))):
        for voice in voices:
            for i, (good, bad, phenomenon) in enumerate(triples):
                pid = f"{kind}-{i:04d}"
                base = f"{kind}/{voice}/{pid}"
                items.append(PairItem(kind, pid, voice, phenomenon, good, bad,
                                      f"{base}_good.flac", f"{base}_bad.flac"))
    return items


def build_pairs(out_dir: str, n_lexical: int = 50, n_syntactic_per_phenomenon: int = 10,
                voices: Sequence[str] | None = None, corpus_root: str | None = None,
                seed: int = 0, workers: int = 2, progress: bool = False) -> dict:
    """Synthesizes the pairs under `out_dir` with the held-out voices (default: awb and ked) and
    writes `pairs.json` (the manifest `load_pairs` reads). The sWUGGY words are drawn from the
    corpus transcripts (`corpus_root`) or, without one, from the King James Bible. Resumable:
    existing audio files are kept."""
    from audiolm_jax.data import bible_text  # noqa: PLC0415
    from audiolm_jax.data.speech_voices import VOICES  # noqa: PLC0415
    from audiolm_jax.data.world_common import TaskFailed, parallel_map  # noqa: PLC0415

    voices = list(voices) if voices is not None else [v.name for v in VOICES if v.heldout]
    known = {v.name for v in VOICES}
    unknown = [v for v in voices if v not in known]
    if unknown:
        raise ValueError(f"voices {unknown} are not speech-world voices; use some of {sorted(known)}")
    lexicon = bible_text.load_lexicon()
    if corpus_root is not None:
        from audiolm_jax.data.corpus import scan_corpus  # noqa: PLC0415
        vocabulary = sorted({w for e in scan_corpus(corpus_root) if e.text
                             for w in bible_text.transcript_words(e.text)})
    else:
        vocabulary = sorted({w for v in bible_text.read_bible()
                             for w in bible_text.transcript_words(v.text)})
    items = plan_pairs(n_lexical, n_syntactic_per_phenomenon, voices, vocabulary, lexicon, seed)
    root = os.path.abspath(out_dir)
    results = parallel_map(_synthesize_pair, [_SynthTask(root, it) for it in items],
                           workers=workers, desc="pairs", progress=progress, unit="pair")
    kept, failed = [], []
    for item, result in zip(items, results):
        if result is None:
            kept.append(item)
        else:
            failed.append({"pair": f"{item.voice}/{item.pair_id}",
                           "reason": result.error if isinstance(result, TaskFailed) else result})
    manifest = {"format": "audiolm_jax.pairs/1", "seed": seed, "voices": voices,
                "counts": dict(Counter(it.kind for it in kept)), "failed": failed,
                "items": [dataclasses.asdict(it) for it in kept]}
    with open(os.path.join(root, MANIFEST), "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1)
    return manifest


def load_pairs(pairs_dir: str) -> list[PairItem]:
    """The items of a `build_pairs` directory (paths stay relative to it).

    The manifest names `.flac` files; where one is missing but the same stem exists with another
    audio extension (a directory transcoded by `benchmarks/pack_corpus.py`, e.g. `.opus`), the
    item names that file instead. Packing leaves pairs.json byte-identical, like every other
    non-audio file, rather than teaching the packer this one manifest format: the manifest keeps
    describing what was built, and the loader finds its audio in whatever codec it was carried.
    """
    from audiolm_jax.data.corpus import find_audio  # noqa: PLC0415

    path = os.path.join(pairs_dir, MANIFEST)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing; build the pairs first: "
                                f"audiolm-jax eval pairs --build --pairs-dir {pairs_dir}")
    with open(path, encoding="utf-8") as fh:
        manifest = json.load(fh)

    def resolve(rel: str) -> str:  # A missing file keeps its name, for the loader's error.
        found = find_audio(os.path.join(pairs_dir, rel))
        return os.path.relpath(found, pairs_dir) if found else rel

    items = [PairItem(**item) for item in manifest["items"]]
    return [dataclasses.replace(it, good_path=resolve(it.good_path),
                                bad_path=resolve(it.bad_path)) for it in items]


# --- scoring ---------------------------------------------------------------------------------------

LoglikFn = Callable[[Any], tuple[float, int]]


def normalized_loglik(loglik_fn: LoglikFn, x: Any) -> float:
    """sum log p / number of tokens, from `loglik_fn(x) -> (sum_log_prob, num_tokens)`."""
    total, count = loglik_fn(x)
    if count <= 0:
        raise ValueError(f"loglik_fn returned {count} tokens; every member needs at least one")
    return float(total) / int(count)


def score_pairs(loglik_fn: LoglikFn, pairs: Sequence[tuple[Any, Any]]) -> dict:
    """Accuracy of picking the first (grammatical / real-word) member of each `(good, bad)` pair
    by the higher length-normalised log-likelihood; ties count 0.5. Returns accuracy, its Wilson
    95% CI, n, and the per-pair margins (good - bad, normalised)."""
    margins = []
    for good, bad in pairs:
        margins.append(normalized_loglik(loglik_fn, good) - normalized_loglik(loglik_fn, bad))
    m = np.asarray(margins, np.float64)
    scores = np.where(m > 0, 1.0, np.where(m == 0, 0.5, 0.0))
    summary = accuracy_summary(scores)
    return {"accuracy": summary["value"], "ci95": summary["ci95"], "n": summary["n"],
            "chance": 0.5, "margins": m.tolist()}
