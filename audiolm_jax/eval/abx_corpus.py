"""The ABX test set of a corpus split: utterances with speaker and phone timings -> triphone items.

Reads the speech small world's layout (data/speech_world.py): beside every `{utt}.flac` (or
any other audio extension, e.g. the `.opus` of a packed tree) a
`{utt}.json` with `speaker` and `phones` = [[phone, start_s, end_s], ...] (flite/festival
timings). Any tree with such JSON sidecars works (e.g. a LibriSpeech tree with forced alignments
converted to this form).
"""
from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from audiolm_jax.data.corpus import AUDIO_EXTENSIONS, find_audio
from audiolm_jax.eval.abx import SILENCES, AbxItem, triphone_items


@dataclasses.dataclass(frozen=True)
class AbxUtterance:
    name: str  # path under the split without suffix, e.g. "flite_awb/luke/flite_awb-luke-0001"
    audio: Path
    speaker: str
    items: tuple[AbxItem, ...]


def read_split(corpus: str | Path, split: str, extent: str = "triphone",
               skip: frozenset[str] = SILENCES) -> list[AbxUtterance]:
    """Utterances of `{corpus}/{split}` that have audio and phone timings, sorted by name."""
    root = Path(corpus) / split
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such split directory; build the corpus first "
                                f"(audiolm-jax corpus speech) or pass --corpus/--split")
    utterances = []
    for meta_path in sorted(root.rglob("*.json")):
        audio = find_audio(meta_path.with_suffix(""))
        if audio is None:
            continue
        audio = Path(audio)
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError as e:
            raise ValueError(f"{meta_path}: not valid JSON ({e}); rebuild the corpus") from None
        if not isinstance(meta, dict) or "phones" not in meta:
            continue
        name = str(meta_path.relative_to(root).with_suffix(""))
        speaker = str(meta.get("speaker") or meta_path.parent.parent.name)
        items = triphone_items(name, speaker, meta["phones"], extent=extent, skip=skip)
        utterances.append(AbxUtterance(name, audio, speaker, tuple(items)))
    if not utterances:
        raise ValueError(f"{root}: no utterance with audio ({', '.join(AUDIO_EXTENSIONS)}) and a "
                         f".json holding 'phones'; ABX needs phone timings (the speech small "
                         f"world writes them)")
    return utterances


def select_utterances(utterances: Sequence[AbxUtterance], max_items: int | None
                      ) -> list[AbxUtterance]:
    """Whole utterances, speakers taken in turn, until at least `max_items` items (None: all).

    Taking speakers in turn keeps the across-speaker condition populated when capping.
    """
    if max_items is None:
        return list(utterances)
    if max_items < 1:
        raise ValueError(f"max_items={max_items}: must be positive (or None for all)")
    by_speaker: dict[str, list[AbxUtterance]] = defaultdict(list)
    for u in utterances:
        by_speaker[u.speaker].append(u)
    queues = [list(reversed(v)) for _, v in sorted(by_speaker.items())]
    chosen, count = [], 0
    while count < max_items and any(queues):
        for queue in queues:
            if queue and count < max_items:
                u = queue.pop()
                chosen.append(u)
                count += len(u.items)
    return sorted(chosen, key=lambda u: u.name)
