"""eval/speaker_similarity.py: the rows `eval similarity` writes (with a pitch-reading stand-in
encoder, so every cosine is known), and resemblyzer's encoder itself on the CPU."""
import json

import numpy as np
import pytest
import soundfile as sf

from audiolm_jax.eval import speaker_similarity
from corpus_trees import tone, write_speech_tree

SR = 16000
SPEC = {"train": {("101", "7"): [1.0]},
        "heldout_voices": {("201", "7"): [4.0, 4.0], ("202", "7"): [4.0]}}


class PitchEncoder:
    """One-hot of the strongest 10 Hz band: equal pitch -> cosine 1, different -> 0."""

    def embed(self, wav):
        if wav.size < speaker_similarity.MIN_SECONDS * SR:
            return None
        band = int(np.argmax(np.abs(np.fft.rfft(wav))) * SR / wav.size // 10)
        return np.eye(2000)[band]


@pytest.fixture
def world(tmp_path, monkeypatch):
    paths = write_speech_tree(tmp_path / "corpus", SPEC)
    source = {uid: sf.read(p, dtype="float32")[0] for uid, p in paths.items()}
    dirs = {k: tmp_path / k for k in ("continuation", "reconstruction")}
    for d in dirs.values():
        d.mkdir()
    own, other = source["201-7-0000"], source["202-7-0000"]
    sf.write(dirs["continuation"] / "201-7-0000-s0.wav", own, SR)           # its own voice
    sf.write(dirs["continuation"] / "202-7-0000-s0.wav",
             np.concatenate([other[:3 * SR], own[3 * SR:]]), SR)           # 201's pitch after
    sf.write(dirs["continuation"] / "201-7-0001-s0.wav", own[:int(3.2 * SR)], SR)  # 0.2 s left
    sf.write(dirs["continuation"] / "nobody-s0.wav", own, SR)               # no source
    sf.write(dirs["reconstruction"] / "202-7-0000.wav", other, SR)
    monkeypatch.setattr(speaker_similarity, "SpeakerEncoder", PitchEncoder)
    return tmp_path, dirs


def test_rows_compare_with_the_prompt_or_the_source_and_calibrate(world):
    from audiolm_jax.cli import main

    root, dirs = world
    out = root / "similarity.json"
    main(["eval", "similarity", "--corpus", str(root / "corpus"), "--out", str(out),
          "--continuation", str(dirs["continuation"]),
          "--reconstruction", str(dirs["reconstruction"])])
    result = json.loads(out.read_text())["similarity"]
    rows = result["rows"]
    cont = rows["continuation"]
    assert (cont["value"], cont["n"], cont["too_short"], cont["unmatched"]) == (0.5, 2, 1, 1)
    assert cont["reference"] == "prompt"
    assert (rows["reconstruction"]["value"], rows["reconstruction"]["n"]) == (1.0, 1)
    # The three continued sources: each real rest matches its prompt; no other voice's prompt.
    assert (rows["original_continuation"]["value"], rows["original_continuation"]["n"]) == (1.0, 3)
    assert (rows["other_speaker"]["value"], rows["other_speaker"]["n"]) == (0.0, 4)
    assert result["continuation_cosine"] == 0.5


def test_needs_some_generated_audio(world):
    from audiolm_jax.cli import main

    root, _ = world
    with pytest.raises(SystemExit, match="needs at least one"):
        main(["eval", "similarity", "--corpus", str(root / "corpus")])


def test_resemblyzer_embeds_on_the_cpu_and_refuses_too_little_sound():
    encoder = speaker_similarity.SpeakerEncoder()
    a, b = encoder.embed(tone(2.0, seed=1)), encoder.embed(tone(2.0, seed=2))
    assert a.shape == (256,) and np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert speaker_similarity.cosine(a, a) == pytest.approx(1.0)
    assert speaker_similarity.cosine(a, b) < 0.95
    assert encoder.embed(tone(0.3, seed=1)) is None
    assert speaker_similarity.cosine(a, None) is None
