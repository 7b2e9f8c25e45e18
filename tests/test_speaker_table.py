"""tables.speaker_table through `eval speaker` and `eval ablation`: the JSON rows they write, and
each original eval-role utterance classified once per command (with a fake classifier)."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from audiolm_jax.eval import tables

SR = 16000
# eval role: heldout_books 101-8-0000 and the second heldout_voices utterance 201-7-0001
SPEC = {"train": {("101", "7"): [1.0, 1.0]},
        "heldout_books": {("101", "8"): [4.0]},
        "heldout_voices": {("201", "7"): [4.0, 4.0]}}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A corpus, two continuation directories, a classifier run dir, and the classifier's log of
    the audio lengths it was asked about."""
    import soundfile as sf
    from corpus_trees import write_speech_tree

    from audiolm_jax.eval import asr, speaker_classifier

    write_speech_tree(tmp_path / "corpus", SPEC)
    dirs = {}
    for name in ("with_semantic", "acoustic_only"):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        sf.write(dirs[name] / "201-7-0001-s0.wav", np.zeros(SR * 4, np.float32), SR)
        sf.write(dirs[name] / "nobody-s0.wav", np.zeros(SR, np.float32), SR)
    (tmp_path / "classifier").mkdir()
    heard = []

    def predict_log_probs(model, wav):  # long audio -> "101", short -> "201"
        heard.append(wav.size)
        return np.log([0.9, 0.1] if wav.size > 2 * SR else [0.1, 0.9])

    model = SimpleNamespace(config=SimpleNamespace(labels=("101", "201")))
    monkeypatch.setattr(speaker_classifier, "predict_log_probs", predict_log_probs)
    monkeypatch.setattr(speaker_classifier, "load_classifier", lambda path: model)
    monkeypatch.setattr(asr, "PocketsphinxASR",
                        lambda: SimpleNamespace(transcribe=lambda wav: "in the beginning was"))
    return SimpleNamespace(root=tmp_path, dirs=dirs, heard=heard)


def _eval(world, *args):
    from audiolm_jax.cli import main

    out = world.root / "out.json"
    main(["eval", *args, "--corpus", str(world.root / "corpus"),
          "--classifier", str(world.root / "classifier"), "--out", str(out)])
    return json.loads(out.read_text())


ROW_KEYS = {"value", "ci95", "n", "correct", "confusions", "chance"}
GENERATED_ROW_KEYS = ROW_KEYS | {"directory", "unmatched", "skip_seconds"}


def test_eval_ablation_classifies_the_originals_once(world):
    result = _eval(world, "ablation", "--continuation", str(world.dirs["with_semantic"]),
                   "--acoustic-only", str(world.dirs["acoustic_only"]))["ablation"]
    # two originals (4 s, whole) once, then one matched continuation per directory (prompt cut)
    assert sorted(world.heard) == [SR, SR, 4 * SR, 4 * SR]
    assert list(result) == ["speaker_accuracy_with_semantic", "speaker_accuracy_acoustic_only",
                            "babble"]
    for name in ("with_semantic", "acoustic_only"):
        row = result[f"speaker_accuracy_{name}"]
        assert set(row) == GENERATED_ROW_KEYS
        assert (row["n"], row["value"], row["unmatched"], row["skip_seconds"]) == (1, 1.0, 1, 3.0)
        assert row["directory"] == str(world.dirs[name])


def test_eval_speaker_rows(world):
    result = _eval(world, "speaker", "--continuation", str(world.dirs["with_semantic"]))["speaker"]
    assert sorted(world.heard) == [SR, 4 * SR, 4 * SR]
    assert set(result) == {"classifier", "labels", "heldout_accuracy", "continuation_accuracy",
                           "rows"}
    rows = result["rows"]
    assert list(rows) == ["original_heldout_books", "original_heldout_voices", "original",
                          "continuation"]
    assert all(set(rows[k]) == ROW_KEYS for k in list(rows)[:3])
    assert set(rows["continuation"]) == GENERATED_ROW_KEYS
    # 101's book is right, 201's utterance is called 101: one confusion per row it sits in
    assert (rows["original"]["n"], rows["original"]["correct"]) == (2, 1.0)
    assert rows["original_heldout_books"]["value"] == 1.0
    assert rows["original_heldout_voices"]["confusions"] == {"201->101": 1}
    assert rows["original"]["confusions"] == {"201->101": 1}
    assert result["heldout_accuracy"] == 0.5 and result["continuation_accuracy"] == 1.0


def test_a_row_named_twice_is_refused(world):
    from audiolm_jax.data.corpus import scan_corpus

    index = scan_corpus(str(world.root / "corpus"), "libri_light")
    model = SimpleNamespace(config=SimpleNamespace(labels=("101", "201")))
    with pytest.raises(ValueError, match="continuation"):
        tables.speaker_table(model, index, {"continuation": str(world.dirs["with_semantic"])},
                             continuations={"continuation": str(world.dirs["acoustic_only"])})
