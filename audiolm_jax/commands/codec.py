"""`audiolm-jax codec encode|decode|roundtrip`: audio <-> SoundStream codes with a trained codec.

    audiolm-jax codec encode    --checkpoint RUN [--num-quantizers 4] speech.flac codes.npy
    audiolm-jax codec decode    --checkpoint RUN codes.npy speech_2kbps.wav
    audiolm-jax codec roundtrip --checkpoint RUN [--num-quantizers 4] speech.flac out.wav

Codes are int32 `[frames, quantizers]` in a plain .npy (no pickle), with a JSON beside it
(`codes.json`: bitrate, frame rate, codebook size, the input's length) so decode can trim the
zero padding of the last frame. Errors name the file and the fix and exit with status 1.
JAX and the model are imported inside the handlers so `audiolm-jax --help` stays instant.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from typing import Any

CODES_SUFFIX = ".npy"


def register(sub: argparse._SubParsersAction) -> None:
    codec = sub.add_parser(
        "codec", help="encode audio to acoustic tokens and decode them with a trained codec",
        description="Encode audio to SoundStream codes, decode codes to audio, or both. "
                    "--checkpoint takes the codec trainer's workdir, its checkpoints/ folder or "
                    "one step folder; the model config is read from the operative gin config "
                    "saved beside the checkpoints, or from --gin_file / --gin.NAME=VALUE.")
    actions = codec.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, blurb in (("encode", "audio file -> int32 codes .npy [frames, Q] (+ .json)"),
                          ("decode", "codes .npy -> audio file (.wav, .flac, .ogg)"),
                          ("roundtrip", "audio file -> codes -> audio file; prints the bitrate")):
        p = actions.add_parser(action, help=blurb, description=blurb)
        p.add_argument("--checkpoint", required=True,
                       help="codec trainer workdir, its checkpoints/ folder or one step folder")
        p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
        p.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default=None,
                       help="conv dtype (default: as trained; float32 is faster on CPUs)")
        if action != "decode":
            p.add_argument("--num-quantizers", type=int, default=None,
                           help="RVQ levels to keep (default: all; 4 = 2 kbps for the speech codec)")
        p.add_argument("input", help="input file")
        p.add_argument("output", help="output file")
        p.set_defaults(func=_run_codec, takes_gin=True)


def _run_codec(args: argparse.Namespace) -> int:
    try:
        model = _load(args)
        if args.action == "encode":
            info = encode_file(model, args.input, args.output, args.num_quantizers)
            print(f"{args.input} -> {args.output}: {info['frames']} frames x "
                  f"{info['num_quantizers']} quantizers, {info['bitrate_kbps']:.2f} kbps")
        elif args.action == "decode":
            seconds = decode_file(model, args.input, args.output)
            print(f"{args.input} -> {args.output}: {seconds:.2f} s")
        else:
            info = roundtrip_file(model, args.input, args.output, args.num_quantizers)
            print(f"{args.input} -> {args.output}: {info['duration_s']:.2f} s at "
                  f"{info['bitrate_kbps']:.2f} kbps (Q={info['num_quantizers']} x "
                  f"{info['codebook_size']} codes at {info['frame_rate_hz']:g} Hz)")
    except (OSError, ValueError) as e:   # missing/corrupt files, bad codes, config mismatch
        print(f"audiolm-jax codec {args.action}: error: {e}", file=sys.stderr)
        return 1
    return 0


def _load(args: argparse.Namespace):
    from audiolm_jax.codec.frozen import load_codec  # noqa: PLC0415

    # Orbax logs a warning per checkpoint item a read-only restore leaves alone (optimizer,
    # data, ...): expected here, and noise on a command line.
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)
    try:
        return load_codec(args.checkpoint, getattr(args, "gin_files", None) or None,
                          gin_bindings=getattr(args, "gin_bindings", ()), step=args.step,
                          compute_dtype=args.compute_dtype)
    finally:
        absl_log.setLevel(level)


# --- file-level operations (also usable from Python) -------------------------------------------

def sidecar_path(codes_path: str) -> str:
    """`codes.npy` -> `codes.json`."""
    return os.path.splitext(codes_path)[0] + ".json"


def _atomic_write(path: str, write) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def code_info(model, codes, num_samples: int) -> dict[str, Any]:
    """What the JSON beside a codes file says about codes `[frames, q]` of `num_samples` audio."""
    from audiolm_jax.codec.api import bitrate_kbps  # noqa: PLC0415

    frames, levels = codes.shape
    rate = model.config.frame_rate
    return {"frames": int(frames), "num_quantizers": int(levels),
            "codebook_size": int(model.codebook_size), "frame_rate_hz": float(rate),
            "bitrate_kbps": bitrate_kbps(levels, model.codebook_size, rate),
            "sample_rate": int(model.sample_rate), "num_samples": int(num_samples),
            "duration_s": num_samples / model.sample_rate}


def encode_file(model, audio_path: str, codes_path: str,
                num_quantizers: int | None = None) -> dict[str, Any]:
    """Audio file -> int32 codes `[frames, q]` in `codes_path` (.npy) + its JSON; returns the JSON."""
    import numpy as np  # noqa: PLC0415

    from audiolm_jax.audio import load_audio  # noqa: PLC0415
    from audiolm_jax.codec.api import encode  # noqa: PLC0415

    if not codes_path.endswith(CODES_SUFFIX):
        raise ValueError(f"{codes_path}: codes are written as .npy; name the output "
                         f"{os.path.splitext(codes_path)[0]}{CODES_SUFFIX}")
    wav = load_audio(audio_path, sample_rate=model.sample_rate)
    codes = encode(model, wav, num_quantizers=num_quantizers)
    info = {**code_info(model, codes, wav.shape[0]), "source": os.path.abspath(audio_path)}
    _atomic_write(codes_path, lambda f: np.save(f, codes, allow_pickle=False))
    _atomic_write(sidecar_path(codes_path),
                  lambda f: f.write((json.dumps(info, indent=2) + "\n").encode()))
    return info


def read_codes(model, codes_path: str):
    """(codes int32 `[frames, q]` checked against `model`, samples to keep or None)."""
    import numpy as np  # noqa: PLC0415

    from audiolm_jax.codec.api import check_codes  # noqa: PLC0415

    if not os.path.isfile(codes_path):
        raise FileNotFoundError(f"{codes_path}: no such codes file; make one with "
                                "`audiolm-jax codec encode`")
    try:
        codes = np.load(codes_path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise ValueError(f"{codes_path}: not a readable .npy array of codes ({e}); codes files "
                         "are written by `audiolm-jax codec encode` (np.save, no pickle)") from e
    try:
        codes = check_codes(model, codes, batched=False)
    except ValueError as e:
        raise ValueError(f"{codes_path}: {e}") from e
    num_samples = None
    sidecar = sidecar_path(codes_path)
    if os.path.isfile(sidecar):
        try:
            with open(sidecar) as f:
                info = json.load(f)
        except ValueError as e:
            raise ValueError(f"{sidecar}: not valid JSON ({e}); fix or delete it") from e
        if int(info.get("codebook_size", model.codebook_size)) != model.codebook_size:
            raise ValueError(f"{sidecar}: these codes come from a codec with codebook size "
                             f"{info['codebook_size']}, this one has {model.codebook_size}; "
                             "decode with the codec that encoded them")
        num_samples = info.get("num_samples")
    return codes, num_samples


def decode_file(model, codes_path: str, audio_path: str) -> float:
    """Codes .npy -> audio file (format by extension); returns the seconds written."""
    from audiolm_jax.audio import save_audio  # noqa: PLC0415
    from audiolm_jax.codec.api import decode  # noqa: PLC0415

    codes, num_samples = read_codes(model, codes_path)
    wav = decode(model, codes)
    if num_samples is not None:
        wav = wav[:int(num_samples)]
    save_audio(audio_path, wav, sample_rate=model.sample_rate)
    return wav.shape[0] / model.sample_rate


def roundtrip_file(model, audio_path: str, out_path: str,
                   num_quantizers: int | None = None) -> dict[str, Any]:
    """Audio file -> codes -> audio file of the same length; returns the codes' info."""
    from audiolm_jax.audio import load_audio, save_audio  # noqa: PLC0415
    from audiolm_jax.codec.api import decode, encode  # noqa: PLC0415

    wav = load_audio(audio_path, sample_rate=model.sample_rate)
    codes = encode(model, wav, num_quantizers=num_quantizers)
    save_audio(out_path, decode(model, codes)[:wav.shape[0]], sample_rate=model.sample_rate)
    return code_info(model, codes, wav.shape[0])
