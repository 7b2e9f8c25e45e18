"""The demo's chain of steps on the small world, CPU-sized (gin/experiments/*_demo_cpu.gin):

    world (speech, piano) -> codec + w2v-BERT training -> k-means -> codec export
    -> token caches (train, heldout_voices) -> stage 1/2/3 LMs -> continuations of held-out
    prompts + codec reconstructions -> report.html

Every step goes through the same entry points as the CLI (`audiolm-jax train|semantic|export|
tokenize`, in this process) or the library (`load_audiolm`), in the order of .carry/pipeline.sh.
Layout under `out`: world/, runs/<model>/, tokens/<split>/, samples/, report.html, .done/.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from audiolm_jax.demo.runner import DemoStepError, StepRunner
from audiolm_jax.demo.world import build_world

STAGES = ("semantic", "coarse", "fine")
# The semantic stage sees longer crops than the acoustic ones (paper: 30 / 10 / 3 s).
STAGE_CROP_SECONDS = {"semantic": 4.0, "coarse": 1.0, "fine": 1.0}
TOKEN_SPLITS = ("train", "heldout_voices")
PROMPT_SECONDS = 3.0
CONTINUATION_SECONDS = 3.0
NUM_PROMPTS = 3
KMEANS_MAX_HOURS = 0.1


def _cli(argv: list[str], step: str) -> None:
    """`audiolm-jax ARGV` in this process, with a fresh gin config per command."""
    import gin  # noqa: PLC0415

    from audiolm_jax import cli  # noqa: PLC0415

    gin.clear_config(clear_constants=True)
    print(f"  $ audiolm-jax {' '.join(argv)}", flush=True)
    rc = cli.main(argv)
    if rc:
        raise DemoStepError(f"demo step {step!r}: `audiolm-jax {' '.join(argv)}` exited {rc}; "
                            "see its output above, then rerun `audiolm-jax demo` (finished steps "
                            "are skipped)")


def _gin_str(path: Path) -> str:
    return repr(os.fspath(path))


def pick_prompts(split_dir: Path, count: int = NUM_PROMPTS,
                 min_seconds: float = PROMPT_SECONDS + CONTINUATION_SECONDS) -> list[Path]:
    """`count` utterances at least `min_seconds` long (so the true continuation exists to compare
    with), sorted and deterministic: one per held-out voice first, then other books of them, then
    any other utterance."""
    import soundfile as sf  # noqa: PLC0415

    from audiolm_jax.data.corpus import is_audio_name  # noqa: PLC0415

    long_enough = [p for p in sorted(split_dir.glob("*/*/*"))
                   if is_audio_name(p.name) and not p.name.startswith(".")
                   and sf.info(os.fspath(p)).duration >= min_seconds]
    chosen: list[Path] = []
    for key in (lambda p: p.parts[-3], lambda p: p.parts[-3:-1], lambda p: p):
        seen = {key(p) for p in chosen}
        for path in long_enough:
            if len(chosen) < count and key(path) not in seen and path not in chosen:
                chosen.append(path)
                seen.add(key(path))
    if not chosen:
        raise DemoStepError(f"{split_dir}: no utterance of at least {min_seconds:g} s to prompt "
                            "with; rebuild the world (delete it and rerun `audiolm-jax demo`)")
    return chosen


def generate_samples(runs: Path, world: Path, out: Path) -> dict:
    """Continues the first 3 s of held-out utterances by 3 s and resynthesises the same 6 s
    through the codec; writes per prompt: original.wav, prompt.wav, continuation.wav,
    reconstruction.wav, spectrogram.png, and samples.json with mel distances."""
    from audiolm_jax.audio import load_audio, save_audio  # noqa: PLC0415
    from audiolm_jax.codec.api import decode_batch, encode_batch  # noqa: PLC0415
    from audiolm_jax.eval.codec_metrics import mel_distance  # noqa: PLC0415
    from audiolm_jax.generate.outputs import write_spectrogram  # noqa: PLC0415
    from audiolm_jax.generate.pipeline import load_audiolm  # noqa: PLC0415

    start = time.time()
    lm = load_audiolm(runs / "stage_semantic", runs / "stage_coarse", runs / "stage_fine",
                      runs / "codec_export", runs / "semantic_tokenizer", dtype="float32")
    rate = int(lm.codec.sample_rate)
    load_seconds = time.time() - start
    prompts = pick_prompts(world / "speech" / "heldout_voices")
    keep = int((PROMPT_SECONDS + CONTINUATION_SECONDS) * rate)
    originals = np.stack([load_audio(p, sample_rate=rate)[:keep] for p in prompts])
    prompt_samples = int(PROMPT_SECONDS * rate)
    start = time.time()
    generation = lm.continuation(list(originals[:, :prompt_samples]), CONTINUATION_SECONDS, seed=0)
    generate_seconds = time.time() - start
    levels = int(lm.codec.num_quantizers)
    reconstructions = decode_batch(lm.codec, encode_batch(lm.codec, originals))[:, :keep]
    boundary = generation.prompt_samples / rate
    samples = []
    for i, path in enumerate(prompts):
        folder = out / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        continuation = generation.wavs[i]
        save_audio(folder / "original.wav", originals[i], sample_rate=rate)
        save_audio(folder / "prompt.wav", originals[i, :prompt_samples], sample_rate=rate)
        save_audio(folder / "continuation.wav", continuation, sample_rate=rate)
        save_audio(folder / "reconstruction.wav", reconstructions[i], sample_rate=rate)
        length = max(keep, continuation.shape[0])
        rows = np.zeros((3, length), np.float32)
        rows[0, :keep], rows[1, :keep] = originals[i], reconstructions[i]
        rows[2, :continuation.shape[0]] = continuation
        write_spectrogram(folder / "spectrogram.png", rows, rate, boundary,
                          ["original (held-out voice)", f"codec reconstruction (Q={levels})",
                           "AudioLM continuation of the first "
                           f"{boundary:.1f} s (prompt | generated)"])
        samples.append({
            "name": path.stem, "source": os.fspath(path), "voice": path.parts[-3],
            "folder": folder.name, "prompt_seconds": boundary,
            "seconds": continuation.shape[0] / rate,
            "reconstruction_mel_distance": mel_distance(originals[i], reconstructions[i], rate),
            "continuation_mel_distance_after_prompt": mel_distance(
                originals[i, prompt_samples:keep],
                continuation[prompt_samples:keep] if continuation.shape[0] >= keep else
                np.pad(continuation[prompt_samples:], (0, keep - continuation.shape[0])), rate),
        })
    info = {"samples": samples, "codec_levels": levels, "sample_rate": rate,
            "load_seconds": load_seconds, "generate_seconds": generate_seconds,
            "stage_seconds": {k: float(v) for k, v in generation.seconds.items()},
            "notes": list(generation.notes)}
    (out / "samples.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def token_counts(cache_dir: Path) -> dict:
    """Utterances, semantic ids and acoustic frames in a token cache (from its shards)."""
    from audiolm_jax.tokens import TokenCache  # noqa: PLC0415

    cache = TokenCache(cache_dir)
    vocab = cache.vocabulary()
    utterances = semantic = frames = 0
    for utterance in cache.utterances():
        utterances += 1
        semantic += int(utterance.semantic.shape[0])
        frames += int(utterance.acoustic.shape[0])
    return {"utterances": utterances, "semantic_tokens": semantic, "acoustic_frames": frames,
            "acoustic_tokens": frames * vocab.num_quantizers, "vocab_size": vocab.size,
            "semantic_vocab": vocab.semantic_size, "quantizers": vocab.num_quantizers,
            "codebook_size": vocab.codebook_size}


def run_demo(out_dir: str = "outputs/demo", hours: float = 0.55, seed: int = 0,
             workers: int | None = None, *, report: bool = True) -> dict:
    """The whole demo; returns {"steps": timings, "report": path}. Reruns skip finished steps."""
    out = Path(out_dir)
    world, runs, tokens, samples = out / "world", out / "runs", out / "tokens", out / "samples"
    speech = world / "speech"
    runner = StepRunner(out / ".done", total=10 + len(TOKEN_SPLITS))

    runner.run("world_speech", "build the small world: speech",
               lambda: build_world("speech", world, hours, seed, workers))
    runner.run("world_piano", "build the small world: piano",
               lambda: build_world("piano", world, hours, seed, workers))
    runner.run("codec", "train the codec (SoundStream, tiny)", lambda: _cli([
        "train", "--gin_file=experiments/codec_demo_cpu", f"--gin.CORPUS={_gin_str(speech)}",
        f"--gin.train.workdir={_gin_str(runs / 'codec')}"], "codec"))
    runner.run("w2v_bert", "train w2v-BERT (tiny)", lambda: _cli([
        "train", "--gin_file=experiments/w2v_bert_demo_cpu",
        f"--gin.audio_crop_batches.root={_gin_str(speech)}",
        f"--gin.train.workdir={_gin_str(runs / 'w2v_bert')}"], "w2v_bert"))
    runner.run("kmeans", "fit k-means on w2v-BERT activations", lambda: _cli([
        "semantic", "fit-kmeans", "--checkpoint", os.fspath(runs / "w2v_bert"),
        "--corpus", os.fspath(speech), "--out", os.fspath(runs / "semantic_tokenizer"),
        "--gin_file=experiments/w2v_bert_demo_cpu", "--max-hours", str(KMEANS_MAX_HOURS)],
        "kmeans"))
    runner.run("export", "export the codec generator", lambda: _cli([
        "export", "--checkpoint", os.fspath(runs / "codec" / "checkpoints"),
        "--out", os.fspath(runs / "codec_export"), "--prefix", "generator",
        "--exclude", "embed_sum", "cluster_size"], "export"))
    counts = {}
    for split in TOKEN_SPLITS:
        runner.run(f"tokenize_{split}", f"tokenize {split}", lambda split=split: _cli([
            "tokenize", "--corpus", os.fspath(speech), "--split", split,
            "--codec", os.fspath(runs / "codec_export"),
            "--semantic", os.fspath(runs / "semantic_tokenizer"),
            "--out", os.fspath(tokens / split), "--shards", "2", "--batch-size", "8",
            "--dataset", "small_world_speech"], f"tokenize_{split}"))
        counts[split] = token_counts(tokens / split)
    for stage in STAGES:
        runner.run(f"stage_{stage}", f"train stage LM: {stage}", lambda stage=stage: _cli([
            "train", "--gin_file=experiments/stage_demo_cpu", f"--gin.STAGE={stage!r}",
            f"--gin.CROP_SECONDS={STAGE_CROP_SECONDS[stage]}",
            f"--gin.CACHE={_gin_str(tokens / 'train')}",
            f"--gin.EVAL_CACHE={_gin_str(tokens / 'heldout_voices')}",
            f"--gin.train.workdir={_gin_str(runs / f'stage_{stage}')}"], f"stage_{stage}"))
    generated = runner.run("samples", "continue held-out prompts + codec reconstructions",
                           lambda: generate_samples(runs, world, samples))
    report_path = out / "report.html"
    if report:
        from audiolm_jax.demo.report import write_report  # noqa: PLC0415

        # Always rewritten (seconds): it shows the timings of every step, this run's or earlier.
        print(f"[demo] writing {report_path}", flush=True)
        write_report(out, runs=runs, samples=generated, token_counts=counts,
                     timings=runner.timings(),
                     wall_seconds=sum(t["seconds"] for t in runner.timings().values()))
    print("[demo] summary (wall time per step):", flush=True)
    print("\n".join("  " + line for line in runner.summary_lines()), flush=True)
    print(f"[demo] report: {report_path.resolve()}", flush=True)
    return {"steps": runner.timings(), "report": os.fspath(report_path)}
