"""`audiolm-jax codec encode|decode|roundtrip` on a tiny codec checkpoint, and its errors; the
codec_tiny_cpu experiment restoring that checkpoint through `audiolm-jax train`.

The checkpoint is the experiment's freshly initialised train state, saved as the trainer saves
it (training it would only cost compile time; tests/test_codec_objective.py covers training).
"""
import json

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from audiolm_jax import cli, config
from audiolm_jax.audio import load_audio
from audiolm_jax.codec import api
from audiolm_jax.codec.frozen import load_codec
from audiolm_jax.codec.objective import CodecObjective
from audiolm_jax.training.checkpoint import Checkpointer, write_operative_config
from audiolm_jax.training.mesh import MeshConfig, make_mesh
from audiolm_jax.training.partitioning import axis_rules
from audiolm_jax.training.program import build_program, seed_rng
from audiolm_jax.training.step import StepOptions
from corpus_trees import tone, write_speech_tree

EXPERIMENT = "experiments/codec_tiny_cpu"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A codec trainer workdir (checkpoints/0 + operative_config.gin) of codec_tiny_cpu."""
    root = tmp_path_factory.mktemp("codec_run")
    gin.clear_config()
    config.parse_gin([EXPERIMENT], [], finalize=False)
    try:
        prog = build_program(CodecObjective(), make_mesh(MeshConfig()), axis_rules(),
                             StepOptions(compute_dtype=jnp.float32), 60)
        state = jax.device_get(prog.init(seed_rng(0)))
        text = gin.operative_config_str()
    finally:
        gin.clear_config()
    ckpt = Checkpointer(root / "checkpoints")
    ckpt.save(0, state, config_text=text)
    ckpt.wait()
    ckpt.close()
    write_operative_config(root / "checkpoints", text)
    return root


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """A 1.3 s tone as 16 kHz FLAC (not a whole number of 20 ms frames)."""
    path = tmp_path_factory.mktemp("audio") / "speech.flac"
    sf.write(path, tone(1.3, seed=3), 16000, subtype="PCM_16")
    return path


def codec(argv, capsys):
    """Runs `audiolm-jax codec ...`; returns (exit status, stdout, stderr)."""
    status = cli.main(["codec", *map(str, argv)])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_encode_writes_int32_codes_and_their_bitrate(workdir, speech, tmp_path, capsys):
    codes_path = tmp_path / "codes.npy"
    status, out, _ = codec(["encode", "--checkpoint", workdir, speech, codes_path], capsys)
    assert status == 0 and "1.00 kbps" in out                  # 4 levels x 5 bits x 50 Hz
    codes = np.load(codes_path, allow_pickle=False)
    assert codes.dtype == np.int32 and codes.shape == (65, 4)  # ceil(20800 / 320) frames
    model = load_codec(workdir)
    np.testing.assert_array_equal(codes, api.encode(model, load_audio(speech)))
    info = json.loads((tmp_path / "codes.json").read_text())
    assert info["num_samples"] == 20800 and info["bitrate_kbps"] == 1.0
    assert (info["frame_rate_hz"], info["codebook_size"]) == (50.0, 32)

    status, out, _ = codec(["encode", "--checkpoint", workdir, "--num-quantizers", "2", speech,
                            tmp_path / "coarse.npy"], capsys)
    assert status == 0 and "0.50 kbps" in out
    np.testing.assert_array_equal(np.load(tmp_path / "coarse.npy"), codes[:, :2])


def test_decode_and_roundtrip_restore_the_input_length(workdir, speech, tmp_path, capsys):
    codes_path = tmp_path / "codes.npy"
    assert codec(["encode", "--checkpoint", workdir, speech, codes_path], capsys)[0] == 0
    status, out, _ = codec(["decode", "--checkpoint", workdir / "checkpoints", codes_path,
                            tmp_path / "decoded.wav"], capsys)
    assert status == 0 and "1.30 s" in out
    decoded = load_audio(tmp_path / "decoded.wav")
    assert decoded.shape == (20800,)
    model = load_codec(workdir)
    expected = api.decode(model, np.load(codes_path))[:20800]
    np.testing.assert_allclose(decoded, np.clip(expected, -1, 1), atol=1 / 16384)  # PCM_16

    status, out, _ = codec(["roundtrip", "--checkpoint", workdir / "checkpoints" / "0",
                            speech, tmp_path / "out.flac"], capsys)
    assert status == 0 and "1.30 s at 1.00 kbps (Q=4 x 32 codes at 50 Hz)" in out
    np.testing.assert_allclose(load_audio(tmp_path / "out.flac"), decoded, atol=1 / 16384)
    (tmp_path / "codes.json").unlink()          # without it the padded last frame is kept
    codec(["decode", "--checkpoint", workdir, codes_path, tmp_path / "padded.wav"], capsys)
    assert load_audio(tmp_path / "padded.wav").shape == (65 * 320,)


@pytest.mark.parametrize("codes, message", [
    (np.zeros((10,), np.int32), "shape"),
    (np.zeros((10, 5), np.int32), "5 quantizer levels"),
    (np.full((10, 4), 32, np.int32), "out of range"),
    (np.zeros((10, 4), np.float32), "integers"),
    (np.array([{"a": 1}], dtype=object), "not a readable .npy"),
])
def test_decode_rejects_bad_codes(workdir, tmp_path, capsys, codes, message):
    path = tmp_path / "bad.npy"
    np.save(path, codes, allow_pickle=True)
    status, _, err = codec(["decode", "--checkpoint", workdir, path, tmp_path / "x.wav"], capsys)
    assert status == 1 and str(path) in err and message in err
    assert not (tmp_path / "x.wav").exists()


def test_errors_name_the_file_and_the_fix(workdir, speech, tmp_path, capsys):
    status, _, err = codec(["encode", "--checkpoint", tmp_path / "nope", speech,
                            tmp_path / "c.npy"], capsys)
    assert status == 1 and "nope does not exist" in err and "workdir" in err

    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    status, _, err = codec(["encode", "--checkpoint", workdir, corrupt, tmp_path / "c.npy"], capsys)
    assert status == 1 and "corrupt.flac" in err and "Fix:" in err
    assert not (tmp_path / "c.npy").exists()

    status, _, err = codec(["encode", "--checkpoint", workdir, speech, tmp_path / "c.txt"], capsys)
    assert status == 1 and "name the output" in err and "c.npy" in err

    status, _, err = codec(["decode", "--checkpoint", workdir, tmp_path / "missing.npy",
                            tmp_path / "x.wav"], capsys)
    assert status == 1 and "missing.npy" in err and "codec encode" in err

    status, _, err = codec(["encode", "--checkpoint", workdir, "--num-quantizers", "9", speech,
                            tmp_path / "c.npy"], capsys)
    assert status == 1 and "num_quantizers=9" in err


def test_train_command_restores_the_codec_checkpoint(workdir, tmp_path, capsys):
    """The experiment parses, builds the codec program over its data and resumes the run."""
    write_speech_tree(tmp_path / "world")
    try:
        status = cli.main(["train", f"--gin_file={EXPERIMENT}",
                           f"--gin.CORPUS='{tmp_path / 'world'}'",
                           f"--gin.train.workdir='{workdir}'", "--gin.train.num_train_steps=0"])
    finally:
        gin.clear_config()
    assert status == 0
    assert f"resumed from {workdir / 'checkpoints'}/0" in capsys.readouterr().out
