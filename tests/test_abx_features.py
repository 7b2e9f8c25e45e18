"""ABX features and run_abx on a synthetic corpus with phone timings, with tiny random models."""

import numpy as np
import pytest
from flax import nnx

from audiolm_jax.eval import abx_corpus
from audiolm_jax.eval.abx_features import CodecTokens, SemanticTokens, W2vBertLayers, levels_for_kbps
from audiolm_jax.eval.codec_model import codec_config, init_codec
from audiolm_jax.eval.semantic_abx import choose_layer_by_abx, feature_names, run_abx
from audiolm_jax.semantic.tokenizer import SemanticTokenizer
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig
from corpus_trees import write_phone_tree

TINY = W2vBertConfig(model_dim=16, num_heads=2, ff_dim=32, num_contrastive_layers=1,
                     num_mlm_layers=2, subsample_channels=4, codebook_entries=8, codevector_dim=8,
                     contrastive_dim=8, dropout=0.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("abx_corpus")
    write_phone_tree(root, np.random.default_rng(0))
    model = W2vBert(TINY, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    tokenizer = SemanticTokenizer(model, 2, rng.standard_normal(16), np.ones(16),
                                  rng.standard_normal((8, 16)))
    codec = init_codec(codec_config(["models/codec_tiny"], [
        "SoundStreamConfig.num_quantizers = 12", "SoundStreamConfig.codebook_size = 1024"]))
    return root, tokenizer, codec


def test_read_split_and_select(setup):
    root = setup[0]
    utts = abx_corpus.read_split(root, "heldout_voices")
    assert [u.speaker for u in utts] == ["s1", "s1", "s2", "s2"]
    # Triphones not touching the pauses: 12 phones -> 10 centre phones per utterance.
    assert all(len(u.items) == 10 for u in utts)
    chosen = abx_corpus.select_utterances(utts, 15)
    assert sorted(u.speaker for u in chosen) == ["s1", "s2"]  # speakers in turn
    with pytest.raises(FileNotFoundError, match="no such split"):
        abx_corpus.read_split(root, "nope")


def test_read_split_finds_audio_in_any_codec(tmp_path):
    from audiolm_jax.audio import load_audio, save_audio

    write_phone_tree(tmp_path, np.random.default_rng(0))
    for flac in sorted(tmp_path.rglob("*.flac")):  # the tree as pack_corpus.py leaves it
        save_audio(flac.with_suffix(".opus"), load_audio(flac), bitrate_kbps=24)
        flac.unlink()
    utts = abx_corpus.read_split(tmp_path, "heldout_voices")
    assert len(utts) == 4 and all(u.audio.suffix == ".opus" and len(u.items) == 10 for u in utts)
    for opus in tmp_path.rglob("*.opus"):
        opus.unlink()
    with pytest.raises(ValueError, match="no utterance with audio"):
        abx_corpus.read_split(tmp_path, "heldout_voices")


def test_features_rates_and_padding_invariance(setup):
    _, tokenizer, codec = setup
    wav = np.random.default_rng(2).uniform(-0.3, 0.3, 16000 + 100).astype(np.float32)
    layers = W2vBertLayers(tokenizer.model)(wav)
    assert len(layers) == 2 and layers[0].shape == (25, 16)  # 25 Hz
    semantic = SemanticTokens(tokenizer)
    ids = semantic.ids(wav)
    # Same ids as tokenizing the unpadded utterance; vectors are the centroids of the ids.
    np.testing.assert_array_equal(ids, np.asarray(tokenizer.tokenize(wav)))
    np.testing.assert_allclose(semantic(wav), np.asarray(tokenizer.centroids)[ids])
    assert SemanticTokens(tokenizer, "onehot")(wav).shape == (25, 1)
    # Codec: 50 Hz; 2 kbps = 4 levels of 1024 codes; the embedding is the RVQ lookup.
    assert (levels_for_kbps(codec, 2.0), levels_for_kbps(codec, 6.0)) == (4, 12)
    with pytest.raises(ValueError, match="not reachable"):
        levels_for_kbps(codec, 1.0 + 1e-3)
    tokens = CodecTokens(codec, [4, 12])
    out = tokens(wav)
    codes = tokens.codes(wav)
    assert codes.shape == (51, 12)  # ceil(16100 / 320)
    lookup = np.asarray(codec.quantizer.lookup(codes[None, :, :4]))[0]
    np.testing.assert_allclose(out[4], lookup, rtol=1e-5, atol=1e-5)
    assert out[12].shape == (51, 16)
    assert CodecTokens(codec, [4], "onehot")(wav)[4].shape == (51, 4)


def test_run_abx_writes_every_feature(setup):
    root, tokenizer, codec = setup
    result = run_abx(root, "heldout_voices", tokenizer=tokenizer, codec=codec, progress=None)
    names = feature_names(2)
    assert sorted(result["abx_within"]) == sorted(names) == sorted(result["abx_across"])
    for name in names:
        for cond in ("abx_within", "abx_across"):
            assert 0.0 <= result[cond][name] <= 1.0, (name, cond)
        assert result["counts"][name]["items"] > 0
    assert result["counts"]["semantic"]["frame_rate"] == 25.0
    assert result["counts"]["acoustic_6kbps"]["frame_rate"] == 50.0
    assert result["speakers"] == ["s1", "s2"] and result["items_total"] == 40
    # Tones per vowel: the signal itself separates the phones.
    assert result["abx_within"]["log_mel"] < 0.2
    onehot = run_abx(root, "heldout_voices", codec=codec, token_mode="onehot", log_mel=False,
                     progress=None)
    assert set(onehot["abx_within"]) == {"acoustic_2kbps", "acoustic_6kbps"}
    assert onehot["counts"]["acoustic_2kbps"]["distance"] == "mismatch"


def test_choose_layer_by_abx_takes_the_lowest_across_speaker_error(setup):
    root, tokenizer, _ = setup
    layer, report = choose_layer_by_abx(root, "heldout_voices", tokenizer.model, max_items=None,
                                        progress=None)
    across = report["abx_across"]
    assert set(across) == {"layer_1", "layer_2"} and report["criterion"] == "abx_across"
    assert across == run_abx(root, "heldout_voices", w2v_bert=tokenizer.model, log_mel=False,
                             progress=None)["abx_across"]
    best = min(across.values())
    assert layer == min(int(n[6:]) for n, v in across.items() if v == best) == report["layer"]
    assert report["speakers"] == ["s1", "s2"] and report["items"] == 40
