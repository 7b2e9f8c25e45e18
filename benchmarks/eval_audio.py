"""Writes the generated audio of the evaluation tables (audiolm_jax/eval/eval_audio.py) for the
held-out prompts of a corpus, and a small JSON of what it wrote and how long it took.

    python3 benchmarks/eval_audio.py --corpus C --out W/eval_audio --json W/results/eval_audio.json \
      --semantic W/stage_semantic --coarse W/stage_coarse --fine W/stage_fine \
      --acoustic-only W/stage_acoustic --codec W/codec_export --tokenizer W/tokenizer \
      --prompts 8 --prompt-seconds 3 --seconds 7

Then: audiolm-jax eval speaker|wer|ablation|detector with --continuation OUT/continuation,
--acoustic-only OUT/acoustic_only, --reconstruction OUT/reconstruction (also the detector's
--originals), --acoustic-generation OUT/acoustic_generation. A system whose run is not given (or
does not exist) is left out with a note; the script fails only if nothing can be written.

Piano (AudioLM sec. IV-I: two stages, no fine run; prompts are the openings of held-out pieces):

    python3 benchmarks/eval_audio.py --layout piano --corpus P --out W/eval_audio \
      --semantic W/stage_semantic --coarse W/stage_coarse --acoustic-only W/stage_acoustic \
      --codec W/codec_export --tokenizer W/tokenizer --no-acoustic-generation --samples 4
    audiolm-jax eval piano --corpus P --audiolm W/eval_audio/continuation \
      --acoustic-only W/eval_audio/acoustic_only
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--layout", default="libri_light",
                   choices=("libri_light", "librispeech", "piano"),
                   help="corpus layout; piano prompts the held-out pieces (default libri_light)")
    p.add_argument("--out", required=True, help="directory for the audio")
    p.add_argument("--json", default=None, help="summary JSON (default OUT/eval_audio.json)")
    for name in ("semantic", "coarse", "fine", "acoustic-only"):
        p.add_argument(f"--{name}", default=None, help=f"{name} stage run")
    p.add_argument("--codec", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--prompt-seconds", type=float, default=3.0)
    p.add_argument("--seconds", type=float, default=7.0, help="continuation after the prompt")
    p.add_argument("--samples", type=int, default=1,
                   help="continuations per prompt and system (<id>-s<k>.wav, k < SAMPLES)")
    p.add_argument("--min-seconds", type=float, default=4.0,
                   help="shortest source utterance (the paper's 4-10 s)")
    p.add_argument("--longest-seconds", type=float, default=10.0,
                   help="longest source utterance chosen (the paper's 4-10 s; speech only: "
                        "piano pieces are cut to --max-seconds)")
    p.add_argument("--max-seconds", type=float, default=10.0,
                   help="sources are cut to this (reconstructions, acoustic generations)")
    p.add_argument("--no-acoustic-generation", action="store_true")
    p.add_argument("--acoustic-generation-prompts", type=int, default=None,
                   help="acoustic generations of the first N prompts only (default: all); each "
                        "runs its stages alone, where the continuations share one batch")
    p.add_argument("--acoustic-generation-samples", type=int, default=1,
                   help="acoustic generations per utterance (<id>-s<k>.wav; the paper's Table II "
                        "takes 3)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from audiolm_jax.codec.frozen import load_codec
    from audiolm_jax.data.corpus import scan_corpus
    from audiolm_jax.eval.eval_audio import choose_prompts, write_eval_audio
    from audiolm_jax.eval.run_info import command_line, machine_info, utc_now, write_json
    from audiolm_jax.generate.pipeline import load_audiolm
    from audiolm_jax.semantic.tokenizer import SemanticTokenizer

    start = time.perf_counter()
    codec = load_codec(args.codec, compute_dtype=args.dtype)
    tokenizer = SemanticTokenizer.load(args.tokenizer)
    exists = lambda run: bool(run) and os.path.exists(run)  # noqa: E731
    notes, audiolm, baseline = [], None, None
    if all(exists(r) for r in (args.semantic, args.coarse)):
        audiolm = load_audiolm(args.semantic, args.coarse, args.fine, codec, tokenizer,
                               dtype=args.dtype)
    else:
        notes.append(f"AudioLM left out: runs {args.semantic}, {args.coarse} missing")
    if exists(args.acoustic_only):
        baseline = load_audiolm(None, args.acoustic_only, args.fine, codec, tokenizer,
                                dtype=args.dtype, acoustic_only=True)
    else:
        notes.append(f"acoustic-only left out: run {args.acoustic_only} missing")
    load_seconds = time.perf_counter() - start
    for note in notes:
        print(f"eval_audio: note: {note}", file=sys.stderr)
    examples = choose_prompts(scan_corpus(args.corpus, args.layout), args.prompts,
                              max(args.min_seconds, args.prompt_seconds), args.longest_seconds)
    summary = write_eval_audio(args.out, examples, audiolm=audiolm, acoustic_only=baseline,
                               codec=codec, prompt_seconds=args.prompt_seconds,
                               seconds=args.seconds, max_seconds=args.max_seconds,
                               num_samples=args.samples, seed=args.seed,
                               acoustic_generation=not args.no_acoustic_generation,
                               acoustic_generation_prompts=args.acoustic_generation_prompts,
                               acoustic_generation_samples=args.acoustic_generation_samples,
                               progress=lambda m: print(m, flush=True))
    result = {"eval_audio": summary, "notes": notes, "load_seconds": round(load_seconds, 2),
              "seconds": round(time.perf_counter() - start, 2), "command": command_line(),
              "machine": machine_info(), "date": utc_now()}
    out = args.json or os.path.join(args.out, "eval_audio.json")
    write_json(out, result)
    print(f"eval_audio: wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
