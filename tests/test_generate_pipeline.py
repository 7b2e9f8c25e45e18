"""AudioLM pipeline with tiny random models: stage boundaries, modes, and the CLI end to end."""
import json

import jax
import numpy as np
import pytest
import soundfile as sf
from flax import nnx
from model_exports import export_model, tiny_codec

from audiolm_jax import cli
from audiolm_jax.generate.pipeline import AudioLM, GenerationConfig
from audiolm_jax.generate.sampling import SamplingConfig
from audiolm_jax.generate.stages import generate_fine
from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.layouts import AudioVocabulary
from audiolm_jax.lm.transformer import Transformer
from audiolm_jax.semantic.tokenizer import SemanticTokenizer
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig

VOCAB = AudioVocabulary(64, 4, 32)          # the tiny world: 3 + 64 + 4 * 32 = 195
LM_GIN = """VOCAB = 195
lm.TransformerConfig.vocab_size = %VOCAB
lm.TransformerConfig.num_layers = 2
lm.TransformerConfig.num_heads = 4
lm.TransformerConfig.d_model = 64
lm.TransformerConfig.d_ff = 128
"""


def _lm(seed):
    return Transformer(TransformerConfig(vocab_size=VOCAB.size, num_layers=2, num_heads=4,
                                         d_model=64, d_ff=128), rngs=nnx.Rngs(seed))


@pytest.fixture(scope="module")
def parts():
    codec, codec_gin = tiny_codec()
    w2v = W2vBert(W2vBertConfig(model_dim=32, num_heads=4, ff_dim=64, num_contrastive_layers=1,
                                num_mlm_layers=2, subsample_channels=8, codebook_groups=1,
                                codebook_entries=16, codevector_dim=16, contrastive_dim=16),
                  rngs=nnx.Rngs(0))
    centroids = np.random.default_rng(0).standard_normal((VOCAB.semantic_size, 32))
    tokenizer = SemanticTokenizer(w2v, 1, np.zeros(32), np.ones(32), centroids)
    return codec, tokenizer, [_lm(i) for i in range(3)], codec_gin


def _speechy(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 150 + 80 * np.sin(2 * np.pi * 1.5 * t)
    return (0.3 * np.sin(2 * np.pi * np.cumsum(f0) / 16000) * (0.6 + 0.4 * np.sin(9 * t))
            + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_fine_stage_chunks_are_independent_and_tile_the_frames(parts):
    """Greedy stage 3 over 10 frames in chunks of 4 equals running each chunk alone."""
    _, _, models, _ = parts
    coarse = np.random.default_rng(0).integers(0, 32, (2, 10, 2)).astype(np.int32)
    greedy = SamplingConfig(0.0)
    whole = generate_fine(models[2], VOCAB, coarse, 2, rng=jax.random.key(0), config=greedy,
                          chunk_frames=4, max_batch=4)
    assert whole.shape == (2, 10, 2) and whole.min() >= 0 and whole.max() < 32
    alone = np.concatenate([generate_fine(models[2], VOCAB, coarse[:, a:b], 2,
                                          rng=jax.random.key(0), config=greedy, chunk_frames=4)
                            for a, b in ((0, 4), (4, 8), (8, 10))], axis=1)
    np.testing.assert_array_equal(whole, alone)
    assert not np.array_equal(whole[:, :4], whole[:, 4:8])   # chunks are not copies


def test_fine_stage_bucketed_rows_sample_the_same_tokens(parts):
    """With shape buckets the chunk rows are padded up to a bucket (3 -> 4 here): one program
    for nearby row counts, and the same sampled tokens (the draws of a row do not depend on how
    many rows follow it)."""
    from audiolm_jax.generate.sampling import DecodeLoop  # noqa: PLC0415

    _, _, models, _ = parts
    coarse = np.random.default_rng(1).integers(0, 32, (3, 4, 2)).astype(np.int32)
    warm = SamplingConfig(1.0)
    kwargs = dict(rng=jax.random.key(3), config=warm, chunk_frames=4)
    exact = generate_fine(models[2], VOCAB, coarse, 2, **kwargs)
    bucketed = generate_fine(models[2], VOCAB, coarse, 2, loop=DecodeLoop(shape_buckets=1),
                             **kwargs)
    np.testing.assert_array_equal(exact, bucketed)
    assert len(np.unique(exact.reshape(3, -1), axis=0)) == 3   # rows sampled, not copied


def test_continuation_keeps_the_prompt_and_accounts_frames(parts):
    codec, tokenizer, models, _ = parts
    lm = AudioLM(*models, codec, tokenizer, num_coarse=2)
    prompt = _speechy(1.05)          # cut to 1.04 s: whole 40 ms semantic frames
    out = lm.continuation([prompt, _speechy(1.2, 1)], 0.5, num_samples=2, seed=0)
    assert out.prompt_frames == 52 and out.codes.shape == (4, 52 + 25, 4)
    assert out.wavs.shape == (4, 77 * 320) and out.prompt_samples == 52 * 320
    assert any("cut to the shortest" in n for n in out.notes)
    prompt_codes = np.asarray(codec.encode(prompt[None, :52 * 320], 4))[0]
    np.testing.assert_array_equal(out.codes[0, :52], prompt_codes)
    np.testing.assert_array_equal(out.codes[1, :52], prompt_codes)
    assert len(out.semantic) == 4 and {"semantic", "coarse", "fine", "decode"} <= set(out.seconds)


def test_two_stage_and_acoustic_modes(parts):
    codec, tokenizer, models, _ = parts
    piano = AudioLM(models[0], models[1], None, codec, tokenizer, num_coarse=4)
    out = piano.unconditional(0.4, num_samples=2, seed=1)
    assert out.codes.shape == (2, 20, 4) and "fine" not in out.seconds
    assert out.prompt_frames == 0
    # Beyond the training crops: 0.2 s windows slide over 0.4 s (stage 1: 5 of 8 tokens).
    short = GenerationConfig(semantic_window_s=0.2, coarse_window_s=0.2)
    slid = AudioLM(models[0], models[1], None, codec, tokenizer, num_coarse=4, config=short)
    out = slid.unconditional(0.4, num_samples=1, seed=1)
    assert out.codes.shape == (1, 20, 4) and out.semantic[0].size == 8
    assert out.codes.min() >= 0 and out.codes.max() < 32
    lm = AudioLM(*models, codec, tokenizer, num_coarse=2)
    out = lm.acoustic([np.array([3, 3, 9, 12, 12, 5])], num_samples=2)
    assert out.codes.shape == (2, 12, 4) and out.semantic[0].tolist() == [3, 9, 12, 5]
    with pytest.raises(ValueError, match="two-stage"):
        AudioLM(models[0], models[1], None, codec, tokenizer, num_coarse=2)
    with pytest.raises(ValueError, match="vocab_size"):
        bad = Transformer(TransformerConfig(vocab_size=150, num_layers=1, num_heads=4, d_model=64,
                                            d_ff=128), rngs=nnx.Rngs(0))
        AudioLM(bad, models[1], models[2], codec, tokenizer, num_coarse=2)


def test_cli_continue_writes_wavs_png_and_tokens(parts, tmp_path, capsys):
    codec, tokenizer, models, codec_gin = parts
    runs = [export_model(m, tmp_path / name, LM_GIN + extra) for m, name, extra in
            zip(models, ("semantic", "coarse", "fine"), ("", "stage_batches.num_coarse = 2\n", ""))]
    codec_dir = export_model(codec, tmp_path / "codec", open(codec_gin).read())
    tokenizer.save(tmp_path / "tokenizer")
    models_args = ["--semantic", runs[0], "--coarse", runs[1], "--fine", runs[2],
                   "--codec", codec_dir, "--tokenizer", str(tmp_path / "tokenizer")]
    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, np.stack([_speechy(1.0)] * 2, axis=1), 16000)      # stereo: downmixed
    out = tmp_path / "out"
    rc = cli.main(["continue", "--prompt", str(prompt), "--seconds", "0.5", "--samples", "2",
                   "--fine-chunk-seconds", "0.2", "--out", str(out), *models_args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "2 channels" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["sample_000.wav", "sample_001.wav",
                                                     "spectrogram.png", "tokens.json"]
    assert sf.info(out / "sample_000.wav").frames == (50 + 25) * 320
    record = json.loads((out / "tokens.json").read_text())
    assert record["prompt_frames"] == 50 and record["models"]["num_coarse"] == 2
    assert np.asarray(record["rows"][1]["codes"]).shape == (75, 4)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(32000), 16000)
    rc = cli.main(["continue", "--prompt", str(silent), "--out", str(tmp_path / "o2"), *models_args])
    assert rc == 1 and "silent.wav" in capsys.readouterr().err


def test_windows_unset_take_the_runs_crop_and_set_ones_win(parts, tmp_path):
    from audiolm_jax.generate.pipeline import PAPER_WINDOWS, load_audiolm

    codec, tokenizer, models, codec_gin = parts
    extras = ("", "stage_batches.num_coarse = 2\n", "stage_batches.crop_seconds = 0.4\n")
    runs = [export_model(m, tmp_path / name, LM_GIN + extra) for m, name, extra in
            zip(models, ("semantic", "coarse", "fine"), extras)]
    codec_dir = export_model(codec, tmp_path / "codec", open(codec_gin).read())
    tokenizer.save(tmp_path / "tokenizer")
    load = lambda config: load_audiolm(*runs, codec_dir, str(tmp_path / "tokenizer"),  # noqa: E731
                                       config=config).config
    unset = load(GenerationConfig())
    assert unset.fine_chunk_s == 0.4 and unset.window_seconds("fine_chunk_s") == 0.4
    assert unset.coarse_window_s is None                          # no crop in the coarse run
    assert unset.window_seconds("coarse_window_s") == PAPER_WINDOWS["coarse_window_s"] == 10.0
    assert load(GenerationConfig(fine_chunk_s=0.2)).window_seconds("fine_chunk_s") == 0.2
    with pytest.raises(ValueError, match="fine_chunk_s=0"):
        GenerationConfig(fine_chunk_s=0).window_seconds("fine_chunk_s")


def test_cli_sampling_flags_reach_the_generation_config():
    from audiolm_jax.commands.generate import _config

    args = cli.build_parser().parse_args(
        ["continue", "--prompt", "p.wav", "--out", "o", "--codec", "c", "--tokenizer", "t",
         "--temperatures", "0.5,0.7,0.9", "--top-k", "5", "--kv-cache", "int8",
         "--weights", "int8", "--cache-phases", "3", "--fine-chunk-seconds", "1",
         "--decode-attention", "pallas"])
    config = _config(args)
    assert config.loop.attention == "pallas"
    assert config.loop.cache_phases == 3 and config.fine_chunk_s == 1.0
    assert config.loop.kv_cache == "int8" and config.coarse.temperature == 0.7
    assert config.loop.weights == "int8"
    assert config.fine.top_k == 5
    default = _config(cli.build_parser().parse_args(
        ["continue", "--prompt", "p", "--out", "o", "--codec", "c", "--tokenizer", "t"]))
    assert default.loop.kv_cache == "compute" and default.loop.min_rows == 1  # CPU: no padding
    assert default.loop.weights == "compute" and default.fine_chunk_s is None  # the run's crop
    assert default.loop.attention == "xla"
    assert _config(cli.build_parser().parse_args(
        ["generate", "--out", "o", "--codec", "c", "--tokenizer", "t", "--min-rows", "4"])).loop.min_rows == 4


def test_acoustic_only_continuation_keeps_the_prompt_and_accounts_frames(parts, monkeypatch):
    """The baseline without semantic tokens: prompt codes -> acoustic-only model -> stage 3."""
    from audiolm_jax.generate import stages
    from audiolm_jax.lm.layouts import BOS, SEP

    codec, tokenizer, models, _ = parts
    prompts_seen = []
    real_sample = stages.sample

    def recording_sample(model, prompts, *a, **kw):
        prompts_seen.append([np.asarray(p) for p in prompts])
        return real_sample(model, prompts, *a, **kw)

    monkeypatch.setattr(stages, "sample", recording_sample)
    base = AudioLM(None, models[1], models[2], codec, tokenizer, num_coarse=2, acoustic_only=True)
    prompt = _speechy(1.05)          # cut to 1.04 s, as AudioLM's continuation cuts it
    out = base.continuation([prompt, _speechy(1.2, 1)], 0.5, num_samples=2, seed=0)
    assert out.prompt_frames == 52 and out.codes.shape == (4, 52 + 25, 4)
    assert out.wavs.shape == (4, 77 * 320) and out.prompt_samples == 52 * 320
    assert out.seconds and "semantic" not in out.seconds and "fine" in out.seconds
    prompt_codes = np.asarray(codec.encode(prompt[None, :52 * 320], 4))[0]
    np.testing.assert_array_equal(out.codes[0, :52], prompt_codes)
    np.testing.assert_array_equal(out.codes[1, :52], prompt_codes)
    assert [s.size for s in out.semantic] == [0] * 4
    assert out.codes.min() >= 0 and out.codes.max() < 32
    # The acoustic-only model saw BOS + the prompt's coarse tokens: no semantic ids, no SEP.
    first = prompts_seen[0][0]
    assert first[0] == BOS and first.size == 1 + 52 * 2 and SEP not in first[1:]
    expected = np.asarray(prompt_codes[:, :2]) + VOCAB.acoustic_offset + np.array([0, 32])
    np.testing.assert_array_equal(first[1:], expected.reshape(-1))
    # 0.5 s = 25 frames of 20 ms; the samples differ from AudioLM's only by the missing stage 1.
    assert base.rates.acoustic_frames(0.5) == 25 and base.rates.seconds(25) == 0.5
    free = base.unconditional(0.4, num_samples=2, seed=1)
    assert free.codes.shape == (2, 20, 4) and free.prompt_frames == 0
    with pytest.raises(ValueError, match="no semantic tokens"):
        base.acoustic([np.array([3, 4])])
    with pytest.raises(ValueError, match="acoustic-only model needs no semantic model"):
        AudioLM(models[0], models[1], models[2], codec, tokenizer, num_coarse=2,
                acoustic_only=True)
    with pytest.raises(ValueError, match="acoustic_only=False"):
        AudioLM(None, models[1], models[2], codec, tokenizer, num_coarse=2)


def test_cli_continue_acoustic_only(parts, tmp_path, capsys):
    codec, tokenizer, models, codec_gin = parts
    acoustic = export_model(models[1], tmp_path / "acoustic", LM_GIN + "stage_batches.stage = "
                       "'acoustic'\nstage_batches.num_coarse = 2\n")
    fine = export_model(models[2], tmp_path / "fine", LM_GIN + "stage_batches.stage = 'fine'\n")
    codec_dir = export_model(codec, tmp_path / "codec", open(codec_gin).read())
    tokenizer.save(tmp_path / "tokenizer")
    common = ["--fine", fine, "--codec", codec_dir, "--tokenizer", str(tmp_path / "tokenizer")]
    prompt = tmp_path / "prompt.wav"
    sf.write(prompt, _speechy(1.0), 16000)
    out = tmp_path / "out"
    rc = cli.main(["continue", "--prompt", str(prompt), "--seconds", "0.5", "--out", str(out),
                   "--acoustic-only", acoustic, "--no-spectrogram", *common])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert sf.info(out / "sample_000.wav").frames == (50 + 25) * 320
    record = json.loads((out / "tokens.json").read_text())
    assert record["prompt_frames"] == 50 and record["models"]["acoustic_only"] == acoustic
    assert record["rows"][0]["semantic"] == []
    # The baseline's run in AudioLM's place, or both at once, are refused with a message.
    rc = cli.main(["continue", "--prompt", str(prompt), "--out", str(tmp_path / "o2"),
                   "--semantic", acoustic, "--coarse", acoustic, *common])
    assert rc == 1 and "trained as the 'acoustic' stage" in capsys.readouterr().err
    rc = cli.main(["continue", "--prompt", str(prompt), "--out", str(tmp_path / "o3"),
                   "--acoustic-only", acoustic, "--coarse", acoustic, *common])
    assert rc == 1 and "replaces --semantic and --coarse" in capsys.readouterr().err
    rc = cli.main(["resynthesize", "--input", str(prompt), "--out", str(tmp_path / "o4"),
                   "--acoustic-only", acoustic, *common])
    assert rc == 1 and "acoustic-only" in capsys.readouterr().err
