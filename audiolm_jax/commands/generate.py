"""`audiolm-jax continue | generate | resynthesize`: audio from trained AudioLM stages.

    audiolm-jax continue --prompt x.wav --seconds 7 --samples 3 --out DIR  MODELS
    audiolm-jax generate --seconds 10 --samples 3 --out DIR                MODELS
    audiolm-jax resynthesize --input x.wav --samples 3 --out DIR           MODELS

MODELS: --semantic RUN --coarse RUN [--fine RUN] --codec RUN --tokenizer DIR (stage runs and the
codec are trainer workdirs or exports; without --fine the coarse stage must cover every level:
the piano two-stage mode). `continue` and `generate` also take --acoustic-only RUN in place of
--semantic and --coarse: the paper's baseline without semantic tokens (a run of
experiments/stage_acoustic_*), which continues the prompt's coarse codes; --fine, --codec and
--tokenizer (its K fixes the token ids) as for AudioLM. Writes DIR/sample_XXX.wav, DIR/spectrogram.png (prompt boundary
marked) and DIR/tokens.json. Bad prompts (too short, silent, unreadable) exit with status 1 and
a message naming the file; stereo or other-rate prompts are converted with a note.
"""
from __future__ import annotations

import argparse
import logging
import sys


def _add_models(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models")
    g.add_argument("--semantic", default=None, help="stage-1 run (trainer workdir or export)")
    g.add_argument("--coarse", default=None, help="stage-2 run (trainer workdir or export)")
    g.add_argument("--acoustic-only", default=None, metavar="RUN",
                   help="instead of --semantic/--coarse: the acoustic-only baseline's run "
                        "(experiments/stage_acoustic_*), continue and generate only")
    g.add_argument("--fine", default=None,
                   help="stage-3 run; omit for the two-stage mode (coarse covers all levels)")
    g.add_argument("--codec", required=True, help="codec run or export (load_codec)")
    g.add_argument("--tokenizer", required=True, help="semantic tokenizer directory")
    g.add_argument("--num-coarse", type=int, default=None,
                   help="Q' (default: the coarse run's stage_batches.num_coarse, else 4; Q "
                        "without --fine)")
    g.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                   help="compute dtype (default: as trained; float32 is faster on CPUs)")
    s = p.add_argument_group("sampling")
    s.add_argument("--temperatures", default="0.6,0.8,0.6",
                   help="semantic,coarse,fine temperatures (0 = argmax); default the paper's")
    s.add_argument("--top-k", type=int, default=0, help="top-k for every stage (0: off)")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus for every stage (1: off)")
    s.add_argument("--semantic-rate", type=float, default=None,
                   help="deduplicated semantic tokens per second (default: measured on the "
                        "prompt; 18 without one)")
    # lm.attention.KV_CACHES, spelled out: `--help` imports no jax.
    s.add_argument("--kv-cache", choices=("compute", "int8"), default="compute",
                   help="int8: keys and values stored as int8 with a scale per position and "
                        "head, half the memory a large batch reads per step; logits differ "
                        "slightly from the exact cache (sampling.DecodeLoop)")
    # lm.int8.WEIGHTS, spelled out for the same reason.
    s.add_argument("--weights", choices=("compute", "int8"), default="compute",
                   help="int8: the stages' weight matrices stored as int8 with a scale per "
                        "output entry while decoding: half their memory, logits differ "
                        "slightly, and on an H100 slower, not faster (XLA dequantises outside "
                        "the product; batch 1: 3.01 s, docs/RESULTS.md session 22) "
                        "(sampling.DecodeLoop.weights)")
    s.add_argument("--min-rows", type=int, default=None,
                   help="decode at least this many rows, padding a lone prompt with copies "
                        "(sampling.DecodeLoop.min_rows); default 2 on a GPU, where one row makes "
                        "every weight product a slow matrix-vector reduction (batch 1: 2.65 -> "
                        "2.00 s on an H100, docs/RESULTS.md), else 1")
    s.add_argument("--cache-phases", type=int, default=1,
                   help="decoding loops per sampling call, each reading only the filled part of "
                        "the KV cache: the same tokens, longer compiles (batch 1 on an H100: "
                        "1.95 -> 1.90 s with 4, docs/RESULTS.md session 23)")
    # lm.attention.DECODE_ATTENTION, spelled out for the same reason.
    s.add_argument("--decode-attention", choices=("xla", "pallas"), default="xla",
                   help="pallas: each one-token step attends to the KV cache in one Pallas "
                        "kernel that streams it once and reads only the filled slots "
                        "(lm/decode_attention.py; the same values, summed in another order); "
                        "meant for large batches, not yet timed on a GPU "
                        "(sampling.DecodeLoop.attention)")
    s.add_argument("--fine-chunk-seconds", type=float, default=None,
                   help="stage 3's non-overlapping chunks (default: the fine run's training "
                        "crop, the paper's 3 s). Shorter chunks decode in fewer steps (1 s: "
                        "batch 1 1.90 -> 1.44 s on an H100) with less context per chunk; "
                        "`audiolm-jax eval fine-context` measures what that costs")
    s.add_argument("--samples", type=int, default=1, help="continuations per prompt")
    s.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-spectrogram", action="store_true", help="skip the PNG")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("continue", help="continue a prompt (AudioLM continuation)",
                       description="Prompt audio -> semantic and coarse tokens -> stages 1-3 -> "
                                   "audio: the prompt followed by --seconds of continuation.")
    p.add_argument("--prompt", required=True, help="prompt audio file (3 s in the paper)")
    p.add_argument("--seconds", type=float, default=7.0, help="seconds to generate after it")
    p.add_argument("--min-prompt-seconds", type=float, default=1.0)
    p.add_argument("--max-prompt-seconds", type=float, default=None,
                   help="keep only the last this many seconds of the prompt")
    _add_models(p)
    p.set_defaults(func=_run, mode="continue")

    p = sub.add_parser("generate", help="unconditional generation",
                       description="Stages 1-3 from nothing: --samples clips of --seconds.")
    p.add_argument("--seconds", type=float, default=10.0)
    _add_models(p)
    p.set_defaults(func=_run, mode="generate")

    p = sub.add_parser("resynthesize", help="acoustic generation from a file's semantic tokens",
                       description="The semantic tokens of --input -> stages 2-3 -> audio: the "
                                   "same content with newly sampled acoustics (speaker, "
                                   "recording conditions).")
    p.add_argument("--input", required=True, help="audio file whose semantic tokens are kept")
    p.add_argument("--min-prompt-seconds", type=float, default=1.0)
    _add_models(p)
    p.set_defaults(func=_run, mode="resynthesize", max_prompt_seconds=None)


def _config(args: argparse.Namespace):
    from audiolm_jax.generate.pipeline import GenerationConfig  # noqa: PLC0415
    from audiolm_jax.generate.sampling import DecodeLoop, SamplingConfig  # noqa: PLC0415

    try:
        temps = [float(t) for t in args.temperatures.split(",")]
    except ValueError:
        temps = []
    if len(temps) != 3:
        raise ValueError(f"--temperatures={args.temperatures!r}: give three numbers, "
                         "semantic,coarse,fine (e.g. 0.6,0.8,0.6)")
    if args.fine_chunk_seconds is not None and args.fine_chunk_seconds <= 0:
        raise ValueError(f"--fine-chunk-seconds={args.fine_chunk_seconds}: give a positive "
                         "length")
    stage = lambda t: SamplingConfig(temperature=t, top_k=args.top_k, top_p=args.top_p)  # noqa: E731
    return GenerationConfig(semantic=stage(temps[0]), coarse=stage(temps[1]), fine=stage(temps[2]),
                            semantic_tokens_per_second=args.semantic_rate,
                            fine_chunk_s=args.fine_chunk_seconds,   # None: the run's crop
                            loop=DecodeLoop(kv_cache=args.kv_cache, min_rows=_min_rows(args),
                                            weights=args.weights,
                                            cache_phases=args.cache_phases,
                                            attention=args.decode_attention))


def _min_rows(args: argparse.Namespace) -> int:
    if args.min_rows is not None:
        if args.min_rows < 1:
            raise ValueError(f"--min-rows={args.min_rows}: give 1 or more")
        return args.min_rows
    import jax  # noqa: PLC0415

    return 2 if jax.default_backend() == "gpu" else 1


def _check_models(args: argparse.Namespace) -> None:
    if args.acoustic_only:
        if args.semantic or args.coarse:
            raise ValueError("--acoustic-only replaces --semantic and --coarse (the baseline has "
                             "no semantic stage); pass either the AudioLM stages or it")
        if args.mode == "resynthesize":
            raise ValueError("resynthesize keeps a file's semantic tokens, which the acoustic-only "
                             "model does not take; use --semantic and --coarse")
    elif not (args.semantic and args.coarse):
        raise ValueError("give --semantic RUN and --coarse RUN (AudioLM), or --acoustic-only RUN "
                         "(the baseline without semantic tokens)")


def _run(args: argparse.Namespace) -> int:
    from audiolm_jax.generate.outputs import write_generation  # noqa: PLC0415
    from audiolm_jax.generate.pipeline import load_audiolm  # noqa: PLC0415
    from audiolm_jax.generate.prompt import load_prompt  # noqa: PLC0415

    command = f"audiolm-jax {args.mode}"
    absl_log = logging.getLogger("absl")   # Orbax warns per item a read-only restore skips
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)
    try:
        if args.samples < 1:
            raise ValueError(f"--samples={args.samples}: give at least 1")
        config = _config(args)
        _check_models(args)
        prompt = None
        if args.mode in ("continue", "resynthesize"):
            source = args.prompt if args.mode == "continue" else args.input
            prompt = load_prompt(source, min_seconds=args.min_prompt_seconds,
                                 max_seconds=args.max_prompt_seconds)
            for note in prompt.notes:
                print(f"{command}: note: {source}: {note}", file=sys.stderr)
        lm = load_audiolm(args.semantic, args.acoustic_only or args.coarse, args.fine, args.codec,
                          args.tokenizer, num_coarse=args.num_coarse, config=config,
                          dtype=args.dtype, acoustic_only=bool(args.acoustic_only))
        if args.mode == "continue":
            out = lm.continuation([prompt.wav], args.seconds, num_samples=args.samples,
                                  seed=args.seed)
        elif args.mode == "generate":
            out = lm.unconditional(args.seconds, num_samples=args.samples, seed=args.seed)
        else:
            out = lm.resynthesize([prompt.wav], num_samples=args.samples, seed=args.seed)
        out.notes = list(prompt.notes if prompt else ()) + out.notes
        info = {"mode": args.mode, "seed": args.seed, "temperatures": args.temperatures,
                "top_k": args.top_k, "top_p": args.top_p,
                "prompt": None if prompt is None else prompt.source,
                "models": {"semantic": args.semantic, "coarse": args.coarse,
                           "acoustic_only": args.acoustic_only, "fine": args.fine,
                           "codec": args.codec, "tokenizer": args.tokenizer,
                           "num_coarse": lm.num_coarse}}
        paths = write_generation(args.out, out, info=info, spectrogram=not args.no_spectrogram)
    except (OSError, ValueError) as e:     # bad prompt, missing run, config mismatch
        print(f"{command}: error: {e}", file=sys.stderr)
        return 1
    finally:
        absl_log.setLevel(level)
    seconds = out.wavs.shape[1] / out.sample_rate
    stages = ", ".join(f"{k} {v:.2f} s" for k, v in out.seconds.items())
    print(f"{command}: wrote {len(paths)} x {seconds:.2f} s to {args.out} ({stages})")
    return 0
