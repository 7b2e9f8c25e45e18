"""The paper's evaluation tables computed from their inputs: a corpus, a trained classifier, and
directories of generated audio. `audiolm-jax eval` is a thin shell around these functions.

Generated audio is matched to the utterance it came from by file name: a generated file's stem
must start with the source utterance's id (`flite_awb-luke-0003-s0.wav` comes from
`flite_awb-luke-0003`); the longest matching id wins. The source gives the expected speaker
(speaker tables) and the reference transcript (WER tables). A file that matches no utterance is
counted under `unmatched` and not scored.
"""
from __future__ import annotations

import os
from typing import Callable, Mapping, Sequence

import numpy as np

from audiolm_jax.data.corpus import CorpusIndex, Example
from audiolm_jax.eval.stats import accuracy_summary

# Table II / III rows: name in the JSON -> what the generated directory holds.
GENERATED_KINDS = ("reconstruction", "acoustic_generation", "continuation")


def match_source(stem: str, by_id: Mapping[str, Example]) -> Example | None:
    """The example whose id is the longest prefix of `stem` ending at a separator or the end."""
    best = None
    for i in range(len(stem), 0, -1):
        if (i == len(stem) or stem[i] in "-_.") and stem[:i] in by_id:
            best = by_id[stem[:i]]
            break
    return best


def generated_files(directory: str, index: CorpusIndex) -> tuple[list[tuple[str, Example]], list[str]]:
    """([(path, source example)], [unmatched paths]) for the audio files under `directory`."""
    from audiolm_jax.eval.detector import list_audio  # noqa: PLC0415

    by_id = {e.id: e for e in index.examples}
    matched, unmatched = [], []
    for path in list_audio(directory):
        source = match_source(os.path.splitext(os.path.basename(path))[0], by_id)
        (matched.append((path, source)) if source is not None else unmatched.append(path))
    return matched, unmatched


def load_after(path: str, skip_seconds: float = 0.0) -> np.ndarray:
    """A file's 16 kHz audio without its first `skip_seconds` (a continuation's prompt)."""
    from audiolm_jax.audio import SAMPLE_RATE, load_audio  # noqa: PLC0415

    return load_audio(path)[int(round(skip_seconds * SAMPLE_RATE)):]


# --- speaker (Table III) ---------------------------------------------------------------------------

def predicted_speakers(model, paths: Sequence[str], skip_seconds: float = 0.0,
                       progress: Callable[[str], None] | None = None) -> list[str]:
    """The classifier's speaker (window-aggregated log-probabilities) of each audio file."""
    from audiolm_jax.eval.speaker_classifier import predict_log_probs  # noqa: PLC0415

    labels, out = model.config.labels, []
    for i, path in enumerate(paths):
        log_probs = predict_log_probs(model, load_after(path, skip_seconds))
        out.append(labels[int(np.argmax(log_probs))])
        if progress and (i + 1) % 10 == 0:
            progress(f"  {i + 1}/{len(paths)} scored")
    return out


def accuracy_row(predicted: Sequence[str], expected: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy with Wilson CI, confusions ("expected->predicted": count) and chance."""
    correct, confusions = [], {}
    for guess, speaker in zip(predicted, expected):
        correct.append(float(guess == speaker))
        if guess != speaker:
            key = f"{speaker}->{guess}"
            confusions[key] = confusions.get(key, 0) + 1
    out = accuracy_summary(correct)
    out["confusions"] = dict(sorted(confusions.items()))
    out["chance"] = 1.0 / len(labels)
    return out


def speaker_accuracy(model, items: Sequence[tuple[str, str]], skip_seconds: float = 0.0,
                     progress: Callable[[str], None] | None = None) -> dict:
    """Window-aggregated accuracy over (audio path, expected speaker) items, Wilson CI."""
    predicted = predicted_speakers(model, [p for p, _ in items], skip_seconds, progress)
    return accuracy_row(predicted, [s for _, s in items], model.config.labels)


def speaker_table(model, index: CorpusIndex, generated: Mapping[str, str] | None = None,
                  continuation_skip_seconds: float = 3.0,
                  progress: Callable[[str], None] | None = None,
                  continuations: Mapping[str, str] | None = None) -> dict:
    """Speaker accuracy of the original eval-role utterances (by split and all together, each
    utterance classified once) and of each directory of generated audio in `generated`
    ({kind: dir}) and `continuations` ({row name: dir}, rows scored like `continuation`).
    Continuations skip their first `continuation_skip_seconds` (the prompt is excluded, as in
    the paper)."""
    from audiolm_jax.eval.speaker_data import check_labels, speaker_roles  # noqa: PLC0415

    labels = model.config.labels
    check_labels(labels, index)
    directories = {kind: (d, continuation_skip_seconds if kind == "continuation" else 0.0)
                   for kind, d in (generated or {}).items()}
    overlap = set(directories) & set(continuations or {})
    if overlap:
        raise ValueError(f"rows named in both generated and continuations: {sorted(overlap)}")
    directories.update({name: (d, continuation_skip_seconds)
                        for name, d in (continuations or {}).items()})
    out: dict = {}
    eval_role = speaker_roles(index)["eval"]
    predicted = predicted_speakers(model, [e.path for e in eval_role], progress=progress)
    expected = [e.speaker for e in eval_role]
    for split in sorted({e.split for e in eval_role}):
        chosen = [i for i, e in enumerate(eval_role) if e.split == split]
        out[f"original_{split}"] = accuracy_row([predicted[i] for i in chosen],
                                                [expected[i] for i in chosen], labels)
    out["original"] = accuracy_row(predicted, expected, labels)
    for name, (directory, skip) in directories.items():
        matched, unmatched = generated_files(directory, index)
        row = speaker_accuracy(model, [(p, e.speaker) for p, e in matched], skip, progress)
        row.update(directory=directory, unmatched=len(unmatched), skip_seconds=skip)
        out[name] = row
    return out


# --- WER (Table II) -------------------------------------------------------------------------------

def heldout_utterances(index: CorpusIndex, splits: Sequence[str] = ("heldout_voices", "heldout_books"),
                       min_seconds: float = 4.0, max_seconds: float = 10.0,
                       limit: int | None = None) -> list[Example]:
    """Held-out utterances with a transcript lasting [min_seconds, max_seconds], sorted by id."""
    from audiolm_jax.audio import audio_info  # noqa: PLC0415

    chosen = [e for e in index.examples if e.split in splits and e.text
              and min_seconds <= audio_info(e.path).duration_s <= max_seconds]
    chosen.sort(key=lambda e: (e.split, e.id))
    return chosen[:limit] if limit else chosen


def wer_rows(asr, items: Sequence[tuple[str, str]], skip_seconds: float = 0.0, seed: int = 0) -> dict:
    """Corpus WER/CER (bootstrap CIs) of (audio path, reference text) items."""
    from audiolm_jax.eval.asr import error_counts, wer_summary  # noqa: PLC0415

    counts = [error_counts(ref, asr.transcribe(load_after(path, skip_seconds)))
              for path, ref in items]
    return wer_summary(counts, seed=seed)


def wer_table(index: CorpusIndex, generated: Mapping[str, str] | None = None,
              limit: int | None = None, seed: int = 0) -> dict:
    """WER/CER of the held-out 4-10 s originals and of each generated directory (reference: the
    source utterance's transcript). Continuations are not scored here (their text is new)."""
    from audiolm_jax.eval.asr import PocketsphinxASR  # noqa: PLC0415

    asr = PocketsphinxASR()
    originals = heldout_utterances(index, limit=limit)
    out = {"original": wer_rows(asr, [(e.path, e.text) for e in originals], seed=seed)}
    for kind, directory in (generated or {}).items():
        matched, unmatched = generated_files(directory, index)
        items = [(p, e.text) for p, e in matched if e.text]
        row = wer_rows(asr, items, seed=seed) if items else {"n": 0}
        row.update(directory=directory, unmatched=len(unmatched))
        out[kind] = row
    return out


# --- babbling (sec. IV-F ablation) ----------------------------------------------------------------

def training_text_lm(index: CorpusIndex, split: str = "train"):
    """A word bigram model of the transcripts of one split (the text the models learned from)."""
    from audiolm_jax.eval.transcript_lm import WordBigramLM  # noqa: PLC0415

    texts = [e.text for e in index.examples if e.split == split and e.text]
    if not texts:
        raise ValueError(f"the corpus has no transcripts in split {split!r}; the babbling rows "
                         "need the training text (a corpus built by `audiolm-jax corpus speech`)")
    return WordBigramLM(texts)


def babble_table(index: CorpusIndex, continuations: Mapping[str, str], skip_seconds: float = 3.0,
                 seed: int = 0, examples: int = 5) -> dict:
    """How much each directory's continuations (prompt skipped) read like the training text
    (transcript_lm), beside the same held-out originals after the same skip: what the prompts
    really continue with. Keeps the first `examples` transcripts of each row for listening notes."""
    from audiolm_jax.eval.asr import PocketsphinxASR  # noqa: PLC0415
    from audiolm_jax.eval.transcript_lm import transcript_summary  # noqa: PLC0415

    asr, lm = PocketsphinxASR(), training_text_lm(index)
    out, sources = {}, {}
    for name, directory in continuations.items():
        matched, unmatched = generated_files(directory, index)
        texts = [asr.transcribe(load_after(p, skip_seconds)) for p, _ in matched]
        sources.update({e.id: e for _, e in matched})
        row = transcript_summary(lm, texts, seed=seed)
        row.update(directory=directory, unmatched=len(unmatched),
                   transcripts={os.path.basename(p): t for (p, _), t in
                                list(zip(matched, texts))[:examples]})
        out[name] = row
    originals = [sources[k] for k in sorted(sources)]
    texts = [asr.transcribe(load_after(e.path, skip_seconds)) for e in originals]
    out["original"] = transcript_summary(lm, texts, seed=seed)
    out["original"]["transcripts"] = {e.id: t for e, t in list(zip(originals, texts))[:examples]}
    out["lm"] = {"kind": "word bigram, interpolated absolute discount 0.75", "split": "train",
                 "vocabulary": len(lm.vocabulary), "skip_seconds": skip_seconds}
    return out


# --- piano (sec. IV-I) ------------------------------------------------------------------------------

def piano_table(index: CorpusIndex, audiolm_dir: str, acoustic_only_dir: str,
                prompt_seconds: float = 3.0) -> dict:
    """AudioLM vs acoustic-only continuations of the same prompts: per-metric agreement with the
    prompt (the original's first `prompt_seconds`) and AudioLM's pairwise win rate. Files pair up
    by name (same stem in both directories); each generated file's first `prompt_seconds` are
    skipped. `ci95` is Wilson's over pairs; `ci95_by_prompt` a bootstrap over prompts."""
    from audiolm_jax.eval.piano_metrics import continuation_metrics, pairwise_win  # noqa: PLC0415

    a_files, _ = generated_files(audiolm_dir, index)
    b_files = {os.path.basename(p): p for p, _ in generated_files(acoustic_only_dir, index)[0]}
    a_metrics, b_metrics, prompts = [], [], []
    for path, source in a_files:
        other = b_files.get(os.path.basename(path))
        if other is None:
            continue
        prompts.append(source.id)
        prompt = load_after(source.path)[:int(prompt_seconds * 16000)]
        a_metrics.append(continuation_metrics(prompt, load_after(path, prompt_seconds)))
        b_metrics.append(continuation_metrics(prompt, load_after(other, prompt_seconds)))
    if not a_metrics:
        raise ValueError(f"no file of {audiolm_dir} has a same-named file in {acoustic_only_dir} "
                         "matching a corpus piece; generate both systems from the same prompts")
    # The samples of one prompt share it: the by-prompt interval resamples prompts, not pairs.
    result = pairwise_win(a_metrics, b_metrics, groups=prompts)
    return {"audiolm_win_rate": result["win_rate"], "ci95": result["ci95"], "n": result["n"],
            "prompts": result["groups"], "ci95_by_prompt": result["ci95_by_group"],
            "means_audiolm": result["means_a"], "means_acoustic_only": result["means_b"]}
