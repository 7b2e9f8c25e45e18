"""Tokenize-job throughput: hours of audio tokenized per hour of wall time (codec + semantic).

    python benchmarks/tokenize_throughput.py --corpus data/world/speech --split train \\
        --codec exports/codec_speech --semantic exports/semantic_speech \\
        [--max-utterances 200] [--batch-size 32] --out results/tokenize.json
    # speed does not depend on the weights: random paper-size models need no training
    python benchmarks/tokenize_throughput.py --corpus data/world/speech --random-init \\
        --codec-gin models/codec_paper_speech --w2v-bert-gin models/w2v_bert_xl --out ...

The job runs twice, in one process, into fresh cache directories: `cold` includes loading the
models and compiling one program per length bucket; `warm` reuses them (the steady state of a
long job, where compiles are amortised). Figures are `audio_hours_per_hour` = hours of audio in
the written shards / wall seconds * 3600. `--max-utterances N` tokenizes N utterances spread
evenly over the sorted split (through a tree of symlinks). The output keeps one run per backend
(cpu, gpu, tpu), with the command, the machine and the date.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import jax
import numpy as np

from audiolm_jax.eval.run_info import command_line, machine_info, utc_now, write_json
from audiolm_jax.tokens import job
from audiolm_jax.tokens.models import FrozenTokenizers, model_info


def subset_corpus(spec: job.JobSpec, count: int, root: Path) -> str:
    """A tree of symlinks to `count` utterances of the split, evenly spread over the sorted ids."""
    plans = job.plan_shards(dataclasses.replace(spec, num_shards=1))
    items = plans[0].items
    picked = [items[i] for i in np.linspace(0, len(items) - 1, min(count, len(items))).astype(int)]
    for _, rel in dict.fromkeys(picked):
        link = root / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(spec.corpus).resolve() / rel)
    return str(root)


def random_models(codec_gin: Sequence[str], w2v_bert_gin: Sequence[str], layer: int,
                  clusters: int, seed: int = 0) -> FrozenTokenizers:
    """Randomly initialised codec and semantic tokenizer from gin model configs."""
    import gin  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415

    from audiolm_jax import config as gin_config  # noqa: PLC0415
    from audiolm_jax.eval.codec_model import codec_config, init_codec  # noqa: PLC0415
    from audiolm_jax.semantic.tokenizer import SemanticTokenizer  # noqa: PLC0415
    from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig  # noqa: PLC0415

    codec = init_codec(codec_config(codec_gin), seed)
    codec.eval()
    gin.clear_config()
    try:
        gin_config.parse_gin(w2v_bert_gin, [], finalize=False)
        config = W2vBertConfig()
    finally:
        gin.clear_config()

    def make():
        return W2vBert(config, rngs=nnx.Rngs(jax.random.key(seed, impl="rbg")))

    graphdef = nnx.graphdef(nnx.eval_shape(make))
    w2v_bert = nnx.merge(graphdef, jax.jit(lambda: nnx.state(make()))())
    w2v_bert.eval()
    dim = config.model_dim
    centroids = np.random.default_rng(seed).normal(size=(clusters, dim)).astype(np.float32)
    semantic = SemanticTokenizer(w2v_bert, min(layer, config.num_mlm_layers), np.zeros(dim),
                                 np.ones(dim), centroids)
    info = model_info(codec, semantic, "random:" + "+".join(codec_gin),
                      "random:" + "+".join(w2v_bert_gin))
    return FrozenTokenizers(codec, semantic, info)


def timed_run(spec: job.JobSpec, models) -> dict:
    start = time.perf_counter()
    models = models if models is not None else FrozenTokenizers.from_spec(spec)
    summary = job.run_job(spec, models=models, log=lambda line: print(line, flush=True))
    wall = time.perf_counter() - start
    hours = summary["hours_written"]
    return {"wall_s": wall, "audio_hours": hours, "utterances": summary["utterances"],
            "skipped": summary["skipped"], "audio_hours_per_hour": hours * 3600 / wall,
            "models": models}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--layout", default="libri_light")
    parser.add_argument("--codec", help="codec checkpoint or export (not with --random-init)")
    parser.add_argument("--semantic", help="semantic tokenizer directory (not with --random-init)")
    parser.add_argument("--random-init", action="store_true",
                        help="random models from --codec-gin / --w2v-bert-gin (speed only)")
    parser.add_argument("--codec-gin", nargs="*", default=["models/codec_paper_speech"])
    parser.add_argument("--w2v-bert-gin", nargs="*", default=["models/w2v_bert_xl"])
    parser.add_argument("--layer", type=int, default=7)
    parser.add_argument("--clusters", type=int, default=1024)
    parser.add_argument("--max-utterances", type=int, default=None)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work-dir", default=None, help="where the caches go (default: temp)")
    parser.add_argument("--out", default="results/tokenize.json")
    args = parser.parse_args(argv)
    if not args.random_init and not (args.codec and args.semantic):
        parser.error("pass --codec and --semantic, or --random-init")

    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        work = Path(work)
        spec = job.JobSpec(corpus=args.corpus, split=args.split, codec=args.codec or "",
                           semantic=args.semantic or "", out="", num_shards=args.shards,
                           batch_size=args.batch_size, layout=args.layout)
        if args.max_utterances:
            (work / "corpus").mkdir()
            spec = dataclasses.replace(
                spec, corpus=subset_corpus(spec, args.max_utterances, work / "corpus"),
                dataset=os.path.basename(os.path.abspath(args.corpus)))
        models = (random_models(args.codec_gin, args.w2v_bert_gin, args.layer, args.clusters)
                  if args.random_init else None)
        cold = timed_run(dataclasses.replace(spec, out=str(work / "cold")), models)
        warm = timed_run(dataclasses.replace(spec, out=str(work / "warm")), cold.pop("models"))
        warm.pop("models")
    machine = machine_info()
    run = {"command": command_line(argv), "date": utc_now(), "machine": machine,
           "device_kind": machine["device_kind"], "corpus": os.path.abspath(args.corpus),
           "split": args.split, "max_utterances": args.max_utterances,
           "batch_size": args.batch_size, "shards": args.shards,
           "models": ({"random_init": True, "codec_gin": args.codec_gin,
                       "w2v_bert_gin": args.w2v_bert_gin} if args.random_init else
                      {"random_init": False, "codec": args.codec, "semantic": args.semantic}),
           "utterances": warm["utterances"], "audio_hours": warm["audio_hours"],
           "wall_s": warm["wall_s"], "audio_hours_per_hour": warm["audio_hours_per_hour"],
           "cold": cold}
    results = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = json.load(f)
    results.setdefault("runs", {})[machine["backend"]] = run
    write_json(args.out, results)
    print(f"{machine['device_kind']}: {run['utterances']} utterances, {run['audio_hours']:.3f} h "
          f"in {run['wall_s']:.1f} s = {run['audio_hours_per_hour']:.1f} h of audio per hour "
          f"(cold, with compiles: {cold['audio_hours_per_hour']:.1f}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
