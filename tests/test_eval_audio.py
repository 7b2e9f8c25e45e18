"""Generated audio for the evaluation tables (eval/eval_audio.py) with tiny random models."""
import numpy as np
import pytest
import soundfile as sf

from audiolm_jax.data.corpus import CorpusIndex, Example
from audiolm_jax.eval.eval_audio import choose_prompts, write_eval_audio
from audiolm_jax.eval.tables import generated_files
from audiolm_jax.generate.pipeline import AudioLM
from test_generate_pipeline import _speechy, parts  # noqa: F401  (the tiny models' fixture)


def _corpus(tmp_path, seconds):
    """Held-out voices a and b, three utterances each (eval role: the odd ones, 1 per voice)."""
    examples = []
    for v, speaker in enumerate(("voice_a", "voice_b")):
        for i, s in enumerate(seconds):
            path = tmp_path / "heldout_voices" / speaker / "book" / f"{speaker}-book-{i:04d}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, _speechy(s, seed=10 * v + i), 16000)
            examples.append(Example(path.stem, str(path), "heldout_voices", speaker, "book",
                                    "some words"))
    return CorpusIndex(root=str(tmp_path), layout="libri_light", examples=tuple(examples))


def test_prompts_round_robin_over_voices_from_the_eval_role(tmp_path):
    index = _corpus(tmp_path, (1.0, 1.3, 0.6, 1.25))
    chosen = choose_prompts(index, 3, min_seconds=1.1)
    # Eval role = odd utterances per voice (0001, 0003); voice a, voice b, then voice a again.
    assert [e.id for e in chosen] == ["voice_a-book-0001", "voice_b-book-0001",
                                      "voice_a-book-0003"]


def test_piano_prompts_are_heldout_pieces_of_any_length_round_robin_over_performers(tmp_path):
    # layout piano: {split}/{performer}/{piece}/{performer}-{piece}.flac; no roles, no upper bound.
    examples = []
    for split, performer, piece, seconds in (("train", "p1", "x", 2.0),
                                             ("heldout_pieces", "p1", "a", 12.0),
                                             ("heldout_pieces", "p1", "b", 0.5),
                                             ("heldout_pieces", "p1", "c", 1.5),
                                             ("heldout_pieces", "p2", "d", 1.5)):
        path = tmp_path / split / performer / piece / f"{performer}-{piece}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.zeros(int(seconds * 16000), np.float32), 16000)
        examples.append(Example(path.stem, str(path), split, performer, piece))
    index = CorpusIndex(root=str(tmp_path), layout="piano", examples=tuple(examples))
    chosen = choose_prompts(index, 3, min_seconds=1.0, max_seconds=10.0)
    assert [e.id for e in chosen] == ["p1-a", "p2-d", "p1-c"]
    with pytest.raises(ValueError, match="held-out piece"):
        choose_prompts(index, 3, min_seconds=20.0)


def test_eval_audio_names_durations_and_prompts(parts, tmp_path):  # noqa: F811
    codec, tokenizer, models, _ = parts
    index = _corpus(tmp_path / "corpus", (1.0, 1.3))
    examples = choose_prompts(index, 2, min_seconds=1.1)
    lm = AudioLM(*models, codec, tokenizer, num_coarse=2)
    base = AudioLM(None, models[1], models[2], codec, tokenizer, num_coarse=2, acoustic_only=True)
    out = tmp_path / "audio"
    summary = write_eval_audio(str(out), examples, audiolm=lm, acoustic_only=base,
                               prompt_seconds=0.64, seconds=0.2, max_seconds=1.2,
                               acoustic_generation_samples=2, progress=lambda m: None)
    assert summary["prompts"] == ["voice_a-book-0001", "voice_b-book-0001"]
    for kind, suffixes, samples in (("continuation", ["-s0"], (32 + 10) * 320),
                                    ("acoustic_only", ["-s0"], (32 + 10) * 320),
                                    ("reconstruction", [""], 1.2 * 16000),
                                    ("acoustic_generation", ["-s0", "-s1"], 1.2 * 16000)):
        names = sorted(p.name for p in (out / kind).iterdir())
        assert names == [f"{e.id}{x}.wav" for e in examples for x in suffixes], kind
        assert summary[kind]["files"] == 2 * len(suffixes)
        assert sf.info(out / kind / names[-1]).frames == int(samples), kind
        matched, unmatched = generated_files(str(out / kind), index)
        assert not unmatched and [e.id for _, e in matched] == [
            e.id for e in examples for _ in suffixes]
    # The prompt is kept: the continuation starts with the prompt's codec resynthesis.
    assert summary["continuation"]["prompt_seconds_kept"] == 0.64
    a = sf.read(out / "continuation" / "voice_a-book-0001-s0.wav")[0]
    b = sf.read(out / "acoustic_only" / "voice_a-book-0001-s0.wav")[0]
    np.testing.assert_allclose(a[:int(0.5 * 16000)], b[:int(0.5 * 16000)], atol=2e-4)


def test_batched_acoustic_generations_equal_one_at_a_time(parts):  # noqa: F811
    """The semantic batch gives each wav the features it has tokenized alone with a frame of
    zeros after it (with nonzero biases, which make features depend on what follows a row;
    padding to the longest row alone would not: 0.24 off at its last frame); bucketed sampling
    and one padded decoding give each wav what `AudioLM.acoustic` gives it alone."""
    import jax
    from flax import nnx

    from audiolm_jax.eval.eval_audio import (acoustic_generations, padded_semantic_ids,
                                             semantic_batch)
    from audiolm_jax.semantic.tokenizer import SemanticTokenizer
    from audiolm_jax.tokens.batching import bucket_length

    codec, tokenizer, models, _ = parts
    graph, state = nnx.split(tokenizer.model)
    state = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.3 if "bias" in str(path) else x, state)
    biased = SemanticTokenizer(nnx.merge(graph, state), tokenizer.layer, tokenizer.mean,
                               tokenizer.std, tokenizer.centroids)
    wavs = [_speechy(0.9, 1), _speechy(0.5, 2), _speechy(0.7, 3)]
    batch, lengths = semantic_batch(wavs)
    assert lengths.tolist() == [w.size // 640 * 640 for w in wavs]
    together = np.asarray(biased.features(batch, lengths))
    for row, (w, n) in enumerate(zip(wavs, lengths)):
        alone = np.asarray(biased.features(np.pad(w[:n], (0, bucket_length(n) - n))[None],
                                           np.array([n])))[0, :n // 640]
        np.testing.assert_allclose(together[row, :n // 640], alone, atol=1e-4)
    lm = AudioLM(*models, codec, tokenizer, num_coarse=2)
    out = acoustic_generations(lm, wavs, seed=4, num_samples=2)
    for i, (samples, ids) in enumerate(zip(out, padded_semantic_ids(tokenizer, wavs))):
        one = lm.acoustic([ids], num_samples=2, seed=4 + i).wavs
        assert samples.shape == one.shape == (2, lengths[i])
        np.testing.assert_allclose(samples, one, atol=1e-5)
        assert not np.allclose(samples[0], samples[1])   # two samples, not one twice
