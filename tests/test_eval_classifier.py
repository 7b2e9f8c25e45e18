"""The paper's audio classifier: channel/pooling plan, shapes, window aggregation, the objective,
the config read back from a run's gin, and which utterances train and judge it."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from audiolm_jax.data.corpus import CorpusIndex, Example
from audiolm_jax.eval import speaker_classifier as sc
from audiolm_jax.eval import speaker_data

TINY = (4, 8, 8, 8, 16, 16)


def test_paper_channel_and_pooling_plan():
    assert sc.PAPER_CHANNELS == (64, 128, 256, 256, 512, 512)
    assert sc.pooling_plan(sc.PAPER_CHANNELS) == (True, True, True, False, True, False)
    assert sc.pooling_plan((8, 8, 4, 16)) == (True, False, False, True)


def test_paper_model_shapes_without_computing():
    config = sc.ClassifierConfig(labels=tuple("abc"))
    model = sc.AudioClassifier(config, rngs=nnx.Rngs(0))  # 3.5M params: cheap to initialise
    kernels = [(b.time_conv.kernel.shape, b.freq_conv.kernel.shape) for b in model.blocks]
    widths = (1,) + sc.PAPER_CHANNELS
    assert kernels == [((3, 1, widths[i], widths[i + 1]), (1, 3, widths[i + 1], widths[i + 1]))
                       for i in range(6)]
    assert model.head.kernel.shape == (512, 3)
    # 1 s at 16 kHz -> 100 frames x 64 mel bins -> four 2x2 pools -> 6 x 4.
    mel = jax.eval_shape(model.features, jax.ShapeDtypeStruct((2, 16000), jnp.float32))
    assert mel.shape == (2, 100, 64)
    x = jax.ShapeDtypeStruct((2, 100, 64, 1), jnp.float32)
    for block in model.blocks:
        x = jax.eval_shape(lambda v, b=block: b(v, False), x)
    assert x.shape == (2, 6, 4, 512)
    logits = jax.eval_shape(lambda w: model(w), jax.ShapeDtypeStruct((2, 16000), jnp.float32))
    assert logits.shape == (2, 3)


def test_window_starts_and_frames():
    np.testing.assert_array_equal(sc.window_starts(40000, 16000, 4000),
                                  [0, 4000, 8000, 12000, 16000, 20000, 24000])
    np.testing.assert_array_equal(sc.window_starts(16000, 16000, 4000), [0])
    np.testing.assert_array_equal(sc.window_starts(5000, 16000, 4000), [0])
    wav = np.arange(20000, dtype=np.float32)
    frames = sc.frame_windows(wav, 16000, 4000)
    assert frames.shape == (2, 16000) and frames[1, 0] == 4000
    short = sc.frame_windows(np.ones(100, np.float32), 16000, 4000)
    assert short.shape == (1, 16000) and short[0, 100:].sum() == 0


def test_aggregate_is_mean_of_log_probs_over_valid_windows():
    lp = np.log(np.array([[0.9, 0.1], [0.4, 0.6], [0.01, 0.99]]))
    np.testing.assert_allclose(sc.aggregate_log_probs(lp), lp.mean(0))
    np.testing.assert_allclose(sc.aggregate_log_probs(lp, [True, True, False]), lp[:2].mean(0))
    # A product of experts: two mild votes for class 0 outweigh one confident vote for class 1
    # only when the confident one is not extreme; the mean of log-probs decides.
    assert np.argmax(sc.aggregate_log_probs(lp)) == 1
    with pytest.raises(ValueError, match="no valid window"):
        sc.aggregate_log_probs(lp, [False] * 3)


def test_predict_matches_per_window_softmax():
    config = sc.ClassifierConfig(labels=("a", "b", "c"), channels=TINY)
    model = sc.AudioClassifier(config, rngs=nnx.Rngs(0))
    model.eval()
    wav = np.random.default_rng(0).normal(0, 0.1, 16000 + 4000 * 19).astype(np.float32)  # 20 windows
    windows = sc.frame_windows(wav, 16000, 4000)
    assert windows.shape[0] == 20  # more than one compiled bucket of 16
    expected = np.asarray(jax.nn.log_softmax(model(jnp.asarray(windows)), -1)).mean(0)
    np.testing.assert_allclose(sc.predict_log_probs(model, wav), expected, rtol=1e-4, atol=1e-5)
    assert sc.predict_label(model, wav) == "abc"[int(np.argmax(expected))]


def test_objective_loss_and_eval():
    objective = sc.ClassifierObjective(sc.ClassifierConfig(labels=("a", "b"), channels=TINY))
    model = objective.create_model(nnx.Rngs(1))
    batch = {"audio": jnp.asarray(np.random.default_rng(1).normal(0, .1, (4, 16000)), jnp.float32),
             "label": jnp.array([0, 1, 0, 1])}
    loss, metrics = objective.loss(model, batch, None, 0)
    assert np.isfinite(float(loss)) and 0.0 <= float(metrics["accuracy"]) <= 1.0
    assert set(objective.eval_step(model, batch)) == {"loss", "accuracy"}
    assert [g.name for g in objective.optimizer_groups()] == ["classifier"]


def test_config_from_operative_gin_resolves_macros():
    text = ("VOICES = ['x', 'y', 'z']\nClassifierConfig.labels = %VOICES\n"
            "ClassifierConfig.channels = (4, 8, 8, 8, 16, 16)\ntrain.num_train_steps = 3\n")
    config = sc.config_from_gin(text, "op.gin")
    assert config.labels == ("x", "y", "z") and config.channels == TINY
    with pytest.raises(ValueError, match="ClassifierConfig"):
        sc.config_from_gin("train.num_train_steps = 3\n", "op.gin")
    with pytest.raises(ValueError, match="at least two"):
        sc.ClassifierConfig(labels=("only",))


def _example(split, speaker, n):
    uid = f"{speaker}-{split}-{n:04d}"
    return Example(id=uid, path=f"/x/{uid}.flac", split=split, speaker=speaker, group=split)


def test_speaker_roles_enrol_even_heldout_voice_utterances():
    examples = ([_example("train", "v1", i) for i in range(3)]
                + [_example("heldout_books", "v1", i) for i in range(2)]
                + [_example("heldout_voices", "h1", i) for i in range(5)])
    index = CorpusIndex("/x", "libri_light", tuple(examples))
    roles = speaker_data.speaker_roles(index)
    heldout_train = [e.id for e in roles["train"] if e.split == "heldout_voices"]
    heldout_eval = [e.id for e in roles["eval"] if e.split == "heldout_voices"]
    assert heldout_train == [f"h1-heldout_voices-{i:04d}" for i in (0, 2, 4)]
    assert heldout_eval == [f"h1-heldout_voices-{i:04d}" for i in (1, 3)]
    assert not {e.id for e in roles["train"]} & {e.id for e in roles["eval"]}
    assert speaker_data.corpus_labels(index) == ("h1", "v1")
    speaker_data.check_labels(["v1", "h1"], index)
    with pytest.raises(ValueError, match="missing"):
        speaker_data.check_labels(["v1"], index)
    prompts = speaker_data.eval_prompts(index, durations={e.id: 5.0 for e in examples})
    assert [e.id for e in prompts] == heldout_eval
    sub = speaker_data.role_index(index, "eval")
    assert sub.splits == ("eval",) and len(sub) == 4


def test_gin_voice_list_matches_the_speech_world():
    from audiolm_jax.config import GIN_DIR
    from audiolm_jax.data.speech_voices import VOICES
    from audiolm_jax.gin_reader import configurable_bindings

    text = (GIN_DIR / "experiments/speaker_small_world.gin").read_text()
    # The include of training/defaults.gin is irrelevant to the labels; read the file alone.
    text = "\n".join(line for line in text.splitlines() if not line.startswith("include"))
    labels = configurable_bindings([(text, "speaker_small_world.gin")], "ClassifierConfig")["labels"][0]
    assert sorted(labels) == sorted(v.name for v in VOICES)
    assert not math.isnan(len(labels))


def test_crops_resynthesized_by_a_codec_keep_labels_and_lengths(tmp_path, monkeypatch):
    """`speaker_crop_batches(resynthesize_codec=...)`: the same crops (offsets, lengths, labels)
    as without, cut from each utterance passed whole through the codec (all levels), which runs
    once per utterance, not once per batch of crops."""
    from corpus_trees import write_speech_tree
    from model_exports import export_model, tiny_codec

    from audiolm_jax.audio import load_audio
    from audiolm_jax.codec import api
    from audiolm_jax.data.corpus import scan_corpus

    spec = {"train": {("s1", "b1"): [1.3, 0.6], ("s2", "b1"): [1.1]},
            "heldout_books": {("s1", "b2"): [1.0]}, "heldout_voices": {("s3", "b3"): [1.0, 1.0]}}
    write_speech_tree(tmp_path / "corpus", spec)
    codec, gin_file = tiny_codec()
    codec_dir = export_model(codec, tmp_path / "codec", open(gin_file).read())
    labels = ["s1", "s2", "s3"]
    kwargs = dict(root=str(tmp_path / "corpus"), labels=labels, crop_seconds=1.2, batch_size=3,
                  seed=0)
    plain_stream = speaker_data.speaker_crop_batches(**kwargs)
    calls = []
    batch_fn = api.resynthesize_batch
    monkeypatch.setattr(api, "resynthesize_batch",
                        lambda *a, **k: calls.append(1) or batch_fn(*a, **k))
    through_stream = speaker_data.speaker_crop_batches(**kwargs, resynthesize_codec=codec_dir)
    examples = speaker_data.role_index(scan_corpus(str(tmp_path / "corpus"), "libri_light"),
                                       "train").examples
    assert len(calls) == 1                          # 4 utterances, one batch of 16 rows
    for i in range(3):                              # several epochs of crops: no further call
        plain, through = next(plain_stream), next(through_stream)
        if i == 0:
            first_through = through
        np.testing.assert_array_equal(plain["label"], through["label"])
        np.testing.assert_array_equal(plain["audio_length"], through["audio_length"])
        for row, n in enumerate(plain["audio_length"]):
            crop = plain["audio"][row, :n]
            # The utterance and offset the plain crop was cut from, then the same cut of its
            # resynthesis.
            found = [(wav, o) for wav in (load_audio(e.path) for e in examples)
                     for o in range(wav.shape[0] - n + 1) if np.array_equal(wav[o:o + n], crop)]
            assert len(found) == 1
            wav, offset = found[0]
            whole = batch_fn(codec, wav[None])[0]
            np.testing.assert_allclose(through["audio"][row, :n], whole[offset:offset + n],
                                       atol=1e-5)
            assert not through["audio"][row, n:].any()
        assert not np.allclose(through["audio"], plain["audio"], atol=1e-3)
    assert len(calls) == 1 and plain["audio_length"].min() < plain["audio"].shape[1]
    # Built again in the same process (the trainer rebuilds its eval data at each eval): the
    # same crops, cut from the clips resynthesized the first time, and no further codec call.
    rebuilt = speaker_data.speaker_crop_batches(**kwargs, resynthesize_codec=codec_dir)
    np.testing.assert_array_equal(next(rebuilt)["audio"], first_through["audio"])
    assert len(calls) == 1


def test_resynthesize_clips_keeps_lengths_and_order_with_a_shape_per_octave(monkeypatch):
    from model_exports import tiny_codec

    from audiolm_jax.codec import api

    codec, _ = tiny_codec()
    rng = np.random.default_rng(0)
    clips = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (700, 1601, 320, 999, 390)]
    shapes = []
    batch_fn = api.resynthesize_batch
    monkeypatch.setattr(api, "resynthesize_batch",
                        lambda m, wavs: shapes.append(wavs.shape) or batch_fn(m, wavs))
    out = api.resynthesize_clips(codec, clips, batch_size=2)
    # By length: 1601, 999 | 700, 390 | 320, padded to 1601, 801 (1601 / 2 rounded up), 401.
    assert shapes == [(2, 1601), (2, 801), (2, 401)]
    assert [o.shape for o in out] == [c.shape for c in clips]
    for clip, got in zip(clips, out):                # causal: padding changes no earlier sample
        np.testing.assert_allclose(got, api.resynthesize_batch(codec, clip[None])[0][:clip.size],
                                   atol=1e-5)
    assert api.resynthesize_clips(codec, []) == []
    with pytest.raises(ValueError, match="batch_size=0"):
        api.resynthesize_clips(codec, clips, batch_size=0)
