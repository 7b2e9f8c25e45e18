"""`audiolm-jax tokenize`: a corpus split -> a token cache (frozen codec + semantic tokenizer).

    audiolm-jax tokenize --corpus data/world/speech --split train --codec exports/codec \
        --semantic exports/semantic_tokenizer --out caches/speech_train [--shards 8] \
        [--runner local|beam] [--batch-size 8] [--buckets-per-octave 4] [--dataset NAME]

Resumable and idempotent: a rerun with the same --out redoes only missing, corrupt or stale
shards, and a killed run loses at most the shards in flight. The codec's config comes from the
operative_config.gin beside its checkpoints/export, or from --gin_file / --gin.NAME=VALUE.
`--runner beam` runs the same per-shard code as an Apache Beam pipeline (DirectRunner unless
`--pipeline-arg=--runner=DataflowRunner ...` says otherwise).
"""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokenize", help="tokenize a corpus split into a sharded token cache",
        description="Runs the frozen codec (acoustic tokens, 50 Hz, [frames, Q]) and semantic "
                    "tokenizer (25 Hz ids) over every utterance of a corpus split and writes a "
                    "sharded, checksummed token cache (manifest.json + shard-*.npz). Bad audio "
                    "is skipped and listed in the manifest. Reruns fill only missing shards.")
    p.add_argument("--corpus", required=True, help="root of the audio tree (holds split folders)")
    p.add_argument("--split", default="train", help="split folder to tokenize (default train)")
    p.add_argument("--codec", required=True,
                   help="codec trainer workdir, its checkpoints/ folder, a step folder, or a "
                        "generator export (audiolm-jax export --prefix generator)")
    p.add_argument("--semantic", required=True, help="semantic tokenizer directory "
                                                     "(audiolm-jax semantic fit-kmeans --out)")
    p.add_argument("--out", required=True, help="cache directory (created; reruns resume it)")
    p.add_argument("--shards", type=int, default=8,
                   help="number of shards (default 8; aim for tens of hours per shard)")
    p.add_argument("--runner", choices=("local", "beam"), default="local",
                   help="local: this process on its JAX devices; beam: an Apache Beam pipeline")
    p.add_argument("--batch-size", type=int, default=8,
                   help="utterances per batch, split over the local devices (default 8)")
    p.add_argument("--dataset", default=None, help="dataset name in the manifest "
                                                   "(default: the corpus folder's name)")
    p.add_argument("--layout", default="libri_light",
                   choices=("libri_light", "librispeech", "piano"), help="corpus layout")
    p.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default=None,
                   help="codec conv dtype (default: as trained)")
    p.add_argument("--load-threads", type=int, default=4, help="audio decoding threads")
    p.add_argument("--compile-threads", type=int, default=8,
                   help="length-bucket programs compiled at once before a shard (default 8)")
    p.add_argument("--buckets-per-octave", type=int, default=4, metavar="N",
                   help="padded lengths per doubling of the utterance length (default 4: < 25%% "
                        "padding). Each is one compiled program, and a small job on GPU is "
                        "compile-bound (~26 s of XLA autotuning per shape on an H200): 1 = "
                        "power-of-two lengths, fewest programs, up to ~2x padding. The tokens "
                        "do not depend on it (a rerun with another value resumes the cache)")
    p.add_argument("--pipeline-arg", action="append", default=[], metavar="ARG",
                   help="Beam pipeline option, repeatable, e.g. --pipeline-arg=--runner=FlinkRunner")
    p.set_defaults(func=_run_tokenize, takes_gin=True)


def _run_tokenize(args: argparse.Namespace) -> int:
    from audiolm_jax.audio import AudioError
    from audiolm_jax.data.corpus import CorpusLayoutError
    from audiolm_jax.tokens.cache import TokenCacheError
    from audiolm_jax.tokens.job import JobSpec, TokenizeJobError, run_job, summary_line

    spec = JobSpec(corpus=args.corpus, split=args.split, codec=args.codec,
                   semantic=args.semantic, out=args.out, num_shards=args.shards,
                   batch_size=args.batch_size, dataset=args.dataset, layout=args.layout,
                   codec_gin=tuple(args.gin_files), codec_gin_bindings=tuple(args.gin_bindings),
                   compute_dtype=args.compute_dtype, load_threads=args.load_threads,
                   compile_threads=args.compile_threads,
                   buckets_per_octave=args.buckets_per_octave)
    try:
        summary = run_job(spec, args.runner, pipeline_args=args.pipeline_arg,
                          log=lambda line: print(line, flush=True))
    except (FileNotFoundError, ImportError, CorpusLayoutError, TokenizeJobError, TokenCacheError,
            AudioError, ValueError) as e:
        print(f"audiolm-jax tokenize: error: {e}", file=sys.stderr)
        return 1
    print(summary_line(summary), flush=True)
    return 0
