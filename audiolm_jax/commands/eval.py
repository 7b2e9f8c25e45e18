"""`audiolm-jax eval EXPERIMENT`: the paper's measurements, one command per table; results go to
`results/eval_<experiment>.json` with the command, machine, date, seeds, counts and 95% CIs.

    audiolm-jax eval speaker  --classifier RUN [--reconstruction DIR] [--acoustic-generation DIR]
                              [--continuation DIR]                         (Table III)
    audiolm-jax eval wer      [--reconstruction DIR] [--acoustic-generation DIR]     (Table II)
    audiolm-jax eval pairs    --pairs-dir DIR [--build] [--semantic-run RUN --tokenizer DIR]
                                                                            (Table IV)
    audiolm-jax eval piano    --audiolm DIR --acoustic-only DIR            (sec. IV-I)
    audiolm-jax eval detector --originals DIR --continuation DIR --workdir RUN   (sec. IV-H)
    audiolm-jax eval abx      --tokenizer DIR [--codec RUN]                (Fig. 3, ABX)
    audiolm-jax eval ablation --continuation DIR --acoustic-only DIR [--classifier RUN]
                              (sec. IV-F: speaker rows; babbling rows from ASR transcripts)
    audiolm-jax eval similarity [--reconstruction DIR] [--acoustic-generation DIR]
                              [--continuation DIR] [--acoustic-only DIR]
                              (Table III's independent check: resemblyzer cosine)
    audiolm-jax eval fine-context --fine-run RUN --tokens CACHE [--chunk-seconds 3 1 0.5]
                              (stage 3's loss with chunks shorter than the paper's 3 s)

What exists runs now (the classifier on originals, ASR of originals, building the pairs, ABX of
the tokenizers); a row that needs generated audio takes a directory of it (files named after
their source utterance, see audiolm_jax/eval/tables.py) and one that needs a stage model takes
its run directory; a missing input fails with a message saying what to pass.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

EXPERIMENTS = ("speaker", "wer", "pairs", "piano", "detector", "abx", "ablation", "similarity",
               "fine-context")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="the paper's evaluation tables on a corpus (results/eval_*.json)",
        description="Run one of the paper's experiments: " + ", ".join(EXPERIMENTS) + ".")
    p.add_argument("experiment", choices=EXPERIMENTS)
    p.add_argument("--corpus", default="outputs/demo/world/speech",
                   help="corpus root (speech, or piano for `piano`)")
    p.add_argument("--out", default=None, help="result JSON (default results/eval_<experiment>.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classifier", help="speaker-classifier run (audiolm-jax train "
                                        "--gin_file=experiments/speaker_small_world)")
    for kind in ("reconstruction", "acoustic-generation", "continuation"):
        p.add_argument(f"--{kind}", default=None,
                       help=f"directory of {kind.replace('-', ' ')} audio named after source utterances")
    p.add_argument("--skip-seconds", type=float, default=3.0,
                   help="prompt length cut from continuations before scoring (default 3)")
    p.add_argument("--limit", type=int, default=None, help="score at most this many utterances")
    p.add_argument("--pairs-dir", default="outputs/eval/pairs")
    p.add_argument("--build", action="store_true", help="pairs: synthesize the pairs first")
    p.add_argument("--pairs-lexical", type=int, default=50)
    p.add_argument("--pairs-syntactic", type=int, default=10, help="pairs per sBLIMP phenomenon")
    p.add_argument("--semantic-run", default=None, help="stage-1 (semantic LM) run directory")
    p.add_argument("--tokenizer", default=None, help="semantic tokenizer directory")
    p.add_argument("--codec", default=None, help="codec run or export")
    p.add_argument("--audiolm", default=None, help="piano: AudioLM continuations directory")
    p.add_argument("--acoustic-only", default=None,
                   help="piano / ablation / similarity: continuations of the acoustic-only "
                        "model")
    p.add_argument("--originals", default=None, help="detector: originals through the codec")
    p.add_argument("--workdir", default=None, help="detector: where to train it")
    p.add_argument("--steps", type=int, default=2000, help="detector: training steps")
    p.add_argument("--heldout-fraction", type=float, default=0.2,
                   help="detector: share of prompts (with their originals) held out to judge it; "
                        "raise it for a handful of prompts so both parts get some")
    p.add_argument("--max-items", type=int, default=None, help="abx: cap on items")
    p.add_argument("--fine-run", default=None, help="fine-context: the stage-3 run directory")
    p.add_argument("--tokens", default=None,
                   help="fine-context: a token cache of held-out utterances (audiolm-jax tokenize)")
    p.add_argument("--chunk-seconds", type=float, nargs="+", default=[3.0, 1.5, 1.0, 0.5],
                   help="fine-context: chunk lengths, the first the reference (the paper's 3 s)")
    p.add_argument("--num-coarse", type=int, default=None,
                   help="fine-context: Q' (default: the fine run's stage_batches.num_coarse)")
    p.set_defaults(func=_run)


def _need(args: argparse.Namespace, *names: str, why: str) -> None:
    missing = [n for n in names if not getattr(args, n.replace("-", "_"))]
    if missing:
        raise SystemExit(f"audiolm-jax eval {args.experiment}: needs "
                         f"{' '.join('--' + n for n in missing)} ({why})")
    for n in names:
        path = getattr(args, n.replace("-", "_"))
        if not os.path.exists(path):
            raise SystemExit(f"audiolm-jax eval {args.experiment}: --{n} {path} does not exist "
                             f"({why})")


def _generated(args: argparse.Namespace) -> dict[str, str]:
    out = {}
    for kind in ("reconstruction", "acoustic_generation", "continuation"):
        directory = getattr(args, kind)
        if directory:
            if not os.path.isdir(directory):
                raise SystemExit(f"audiolm-jax eval {args.experiment}: --{kind.replace('_', '-')} "
                                 f"{directory} is not a directory")
            out[kind] = directory
    return out


def _run(args: argparse.Namespace) -> int:
    from audiolm_jax.eval.run_info import command_line, machine_info, utc_now, write_json

    start = time.perf_counter()
    result = {"experiment": args.experiment, "seed": args.seed,
              **globals()["_" + args.experiment.replace("-", "_")](args)}
    result.update(command=command_line(script="audiolm-jax"), machine=machine_info(),
                  date=utc_now(), seconds=round(time.perf_counter() - start, 1))
    name = args.experiment.replace("-", "_")
    out = args.out or os.path.join("results", f"eval_{name}.json")
    write_json(out, result)
    print(f"audiolm-jax eval {args.experiment}: wrote {out}", flush=True)
    return 0


def _index(args):
    from audiolm_jax.data.corpus import scan_corpus

    return scan_corpus(args.corpus, "piano" if args.experiment == "piano" else "libri_light")


def _speaker(args) -> dict:
    from audiolm_jax.eval.speaker_classifier import load_classifier
    from audiolm_jax.eval.tables import speaker_table

    _need(args, "classifier", why="train it: audiolm-jax train --gin_file=experiments/"
                                  "speaker_small_world --gin.train.workdir=\"'RUN'\"")
    model = load_classifier(args.classifier)
    table = speaker_table(model, _index(args), _generated(args), args.skip_seconds, print)
    speaker = {"classifier": os.path.abspath(args.classifier), "labels": list(model.config.labels),
               "heldout_accuracy": table["original"]["value"],
               **{f"{k}_accuracy": v["value"] for k, v in table.items() if k in
                  ("reconstruction", "acoustic_generation", "continuation")},
               "rows": table}
    return {"speaker": speaker}


def _wer(args) -> dict:
    from audiolm_jax.eval.tables import wer_table

    table = wer_table(_index(args), _generated(args), args.limit, args.seed)
    return {"wer": {**{k: v.get("wer") for k, v in table.items()}, "rows": table,
                    "asr": "pocketsphinx 5 en-us (bundled model), jiwer; text normalised"}}


def _pairs(args) -> dict:
    from audiolm_jax.eval.pairs import build_pairs, load_pairs

    if args.build:
        build_pairs(args.pairs_dir, args.pairs_lexical, args.pairs_syntactic,
                    corpus_root=args.corpus if os.path.isdir(args.corpus) else None,
                    seed=args.seed, progress=True)
    items = load_pairs(args.pairs_dir)
    counts = {k: sum(it.kind == k for it in items) for k in ("swuggy", "sblimp")}
    _need(args, "semantic-run", "tokenizer",
          why=f"pairs are in {args.pairs_dir} ({counts}); scoring them needs the stage-1 model "
              "and the semantic tokenizer that feed score_pairs(loglik_fn, pairs)")
    from audiolm_jax.eval.pairs import score_pairs
    from audiolm_jax.eval.semantic_loglik import load_semantic_loglik
    from audiolm_jax.eval.tables import load_after

    scorer = load_semantic_loglik(args.semantic_run, args.tokenizer)
    loglik_fn = lambda rel: scorer(load_after(os.path.join(args.pairs_dir, rel)))  # noqa: E731
    out, all_margins = {}, []
    for kind in ("swuggy", "sblimp"):
        chosen = [it for it in items if it.kind == kind]
        if args.limit is not None:
            chosen = chosen[:args.limit]
        print(f"audiolm-jax eval pairs: scoring {len(chosen)} {kind} pairs", flush=True)
        scored = score_pairs(loglik_fn, [(it.good_path, it.bad_path) for it in chosen])
        scored["pair_ids"] = [f"{it.voice}/{it.pair_id}" for it in chosen]
        margins = np.asarray(scored["margins"], np.float64)
        scored["by_phenomenon"] = {
            ph: _accuracy(margins[[it.phenomenon == ph for it in chosen]])
            for ph in sorted({it.phenomenon for it in chosen})}
        out[kind] = scored
        all_margins.append(margins)
    overall = _accuracy(np.concatenate(all_margins))
    return {**out, "overall": overall, "counts": counts,
            "semantic_run": os.path.abspath(args.semantic_run),
            "tokenizer": os.path.abspath(args.tokenizer),
            "scoring": "sum log p / tokens of the deduplicated semantic tokens under the stage-1 "
                       "LM (audiolm_jax.eval.semantic_loglik); ties count 0.5; Wilson 95% CI"}


def _accuracy(margins: np.ndarray) -> dict:
    """Accuracy (ties half) with its Wilson CI, from good-minus-bad normalised margins."""
    from audiolm_jax.eval.stats import accuracy_summary

    scores = np.where(margins > 0, 1.0, np.where(margins == 0, 0.5, 0.0))
    summary = accuracy_summary(scores)
    return {"accuracy": summary["value"], "ci95": summary["ci95"], "n": summary["n"]}


def _piano(args) -> dict:
    from audiolm_jax.eval.tables import piano_table

    _need(args, "audiolm", "acoustic-only",
          why="directories of continuations of the same held-out prompts by AudioLM and by the "
              "acoustic-only model, files named after the source piece")
    return {"piano": piano_table(_index(args), args.audiolm, args.acoustic_only, args.skip_seconds)}


def _detector(args) -> dict:
    from audiolm_jax.eval.detector import (detector_files, evaluate_detector, load_detector,
                                           train_detector)

    _need(args, "originals", "continuation", "workdir",
          why="originals passed through the codec and AudioLM continuations (with their 3 s "
              "prompts), and a run directory to train the detector in")
    files = detector_files(args.originals, args.continuation, "eval", args.heldout_fraction,
                           seed=args.seed)
    if len({f.label for f in files}) < 2:
        raise SystemExit(f"audiolm-jax eval detector: the held-out part (fraction "
                         f"{args.heldout_fraction}) has {len(files)} files, not both classes; "
                         "give more prompts or a larger --heldout-fraction")
    train_detector(args.originals, args.continuation, args.workdir, steps=args.steps,
                   heldout_fraction=args.heldout_fraction,
                   skip_seconds=args.skip_seconds, seed=args.seed)
    model = load_detector(args.workdir)
    return {"detector": {**evaluate_detector(model, files, args.skip_seconds),
                         "heldout_fraction": args.heldout_fraction, "steps": args.steps}}


def _abx(args) -> dict:
    from audiolm_jax.eval.semantic_abx import run_abx

    _need(args, "tokenizer", why="the semantic tokenizer directory (audiolm-jax semantic fit-kmeans)")
    codec = None
    if args.codec:
        from audiolm_jax.codec.frozen import load_codec
        codec = load_codec(args.codec)
    return {"abx": run_abx(args.corpus, tokenizer=args.tokenizer, codec=codec,
                           max_items=args.max_items, seed=args.seed)}


def _similarity(args) -> dict:
    from audiolm_jax.eval.speaker_similarity import SpeakerEncoder, similarity_table

    generated = _generated(args)
    if args.acoustic_only:
        _need(args, "acoustic-only", why="continuations of the acoustic-only model")
        generated["acoustic_only"] = args.acoustic_only
    if not generated:
        raise SystemExit("audiolm-jax eval similarity: needs at least one of --reconstruction, "
                         "--acoustic-generation, --continuation, --acoustic-only (directories of "
                         "generated audio named after their source utterances)")
    table = similarity_table(SpeakerEncoder(), _index(args), generated,
                             prompt_seconds=args.skip_seconds, seed=args.seed, progress=print)
    return {"similarity": {**{f"{k}_cosine": v["value"] for k, v in table.items()}, "rows": table,
                           "encoder": "resemblyzer VoiceEncoder (GE2E, 256-d), cosine"}}


def _ablation(args) -> dict:
    from audiolm_jax.eval.tables import babble_table, speaker_table

    _need(args, "continuation", "acoustic-only",
          why="continuations with (AudioLM) and without semantic tokens (acoustic-only model) of "
              "the same prompts")
    out, index = {}, _index(args)
    dirs = {"with_semantic": args.continuation, "acoustic_only": args.acoustic_only}
    if args.classifier:
        from audiolm_jax.eval.speaker_classifier import load_classifier

        _need(args, "classifier", why="the speaker classifier run")
        model = load_classifier(args.classifier)
        table = speaker_table(model, index, continuation_skip_seconds=args.skip_seconds,
                              continuations=dirs)   # the originals are classified once
        out.update({f"speaker_accuracy_{name}": table[name] for name in dirs})
    else:
        out["speaker_note"] = "no --classifier: speaker accuracy rows left out"
    # No reference text exists for new speech: score how much its transcript reads like the
    # training text (eval/transcript_lm.py), beside the originals' real continuations.
    try:
        out["babble"] = babble_table(index, dirs, args.skip_seconds, args.seed)
    except ImportError as e:  # PocketsphinxASR's message says how to install it
        out["babble_note"] = f"transcript rows left out: {e}"
    return {"ablation": out}


def _fine_context(args) -> dict:
    from audiolm_jax.eval.fine_context import fine_context_table
    from audiolm_jax.generate.loading import load_stage_model, stage_data_hints
    from audiolm_jax.generate.timing import TokenRates
    from audiolm_jax.tokens.cache import TokenCache

    _need(args, "fine-run", "tokens", why="the stage-3 run and a token cache of held-out "
                                          "utterances to score it on")
    cache = TokenCache(args.tokens)
    num_coarse = args.num_coarse or stage_data_hints(args.fine_run).get("num_coarse") or 4
    utterances = [u.acoustic for u in cache.utterances()][:args.limit]
    model = load_stage_model(args.fine_run, what="fine")
    print(f"audiolm-jax eval fine-context: {len(utterances)} utterances, Q'={num_coarse}, "
          f"chunks {args.chunk_seconds} s", flush=True)
    table = fine_context_table(model, cache.vocabulary(), num_coarse, utterances,
                               args.chunk_seconds, TokenRates().acoustic_hz, seed=args.seed)
    return {"fine_context": {"chunks": table, "fine_run": os.path.abspath(args.fine_run),
                             "tokens": os.path.abspath(args.tokens), "num_coarse": num_coarse,
                             "scoring": "teacher-forced log p of the true fine codes, chunks cut "
                                        "as generation cuts them (audiolm_jax.eval.fine_context)"}}
