"""Semantic vs acoustic tokens: ABX on held-out voices (AudioLM Table I / Figure 3) and the
tokenization throughput of codec + semantic tokenizer at paper size.

    python benchmarks/semantic.py --tokenizer exports/semantic_tokenizer \\
        --codec exports/codec_generator --corpus outputs/demo/world/speech \\
        --split heldout_voices --out results/semantic.json          # ABX + throughput (GPU)
    python benchmarks/semantic.py --tiny --skip-throughput           # random tiny models, CPU

ABX (eval/semantic_abx.run_abx): keys abx_within.* / abx_across.* for layer_1..layer_L (raw
activations of --w2v-bert, else of the tokenizer's model), semantic, acoustic_2kbps,
acoustic_6kbps and log_mel, with item and group counts under abx.counts, 95% intervals under
abx.abx_ci95 and paired intervals of the differences (semantic and each layer minus each acoustic
feature and log-mel) under abx.abx_paired, from a bootstrap over triphone contexts. --tiny uses random-init
tiny models (a w2v-BERT with k-means fitted on the split itself, a 12 x 1024 tiny codec).

Throughput: random-init models of `--w2v-gin` (models/w2v_bert_xl) and `--codec-gin`
(models/codec_paper_speech; --tiny: the tiny configs), a batch of `--batch-size` x `--seconds`
of audio on the first device: jitted semantic ids (MLM layer 7, K=1024 random centroids) and
codec codes (Q=12), each call blocked until ready; `tokenize_hours_per_hour` = audio hours per
wall hour of both, from the median of --repeats calls after compilation and a warm-up.

An existing --out keeps the part this run skips (ABX on one machine, throughput on another).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from audiolm_jax.eval.codec_model import codec_config, init_codec
from audiolm_jax.eval.run_info import command_line, machine_info, utc_now, write_json

TINY_CODEC_ABX = ["SoundStreamConfig.num_quantizers = 12", "SoundStreamConfig.codebook_size = 1024"]


def w2v_config(gin_file: str):
    """The W2vBertConfig a gin file binds, without leaving gin state behind."""
    import gin  # noqa: PLC0415

    from audiolm_jax import config as gin_config  # noqa: PLC0415
    from audiolm_jax.semantic.w2v_bert import W2vBertConfig  # noqa: PLC0415

    gin.clear_config()
    try:
        gin_config.parse_gin([gin_file], [], finalize=False)
        return W2vBertConfig()
    finally:
        gin.clear_config()


def init_w2v_bert(config, seed: int = 0, dtype=jnp.float32):
    """A random W2vBert built in one jitted program."""
    from audiolm_jax.semantic.w2v_bert import W2vBert  # noqa: PLC0415

    return nnx.jit(lambda: W2vBert(config, rngs=nnx.Rngs(seed), dtype=dtype))()


# --- ABX -------------------------------------------------------------------------------------

def tiny_models(corpus: str, split: str, seed: int = 0, clusters: int = 16):
    """Random-init tiny w2v-BERT (k-means fitted on `split`'s audio) and tiny 12 x 1024 codec."""
    from audiolm_jax.audio import load_audio  # noqa: PLC0415
    from audiolm_jax.eval.abx_corpus import read_split  # noqa: PLC0415
    from audiolm_jax.eval.abx_features import padded  # noqa: PLC0415
    from audiolm_jax.semantic.tokenizer import fit_semantic_tokenizer  # noqa: PLC0415

    model = init_w2v_bert(w2v_config("models/w2v_bert_tiny"), seed)
    utterances = read_split(corpus, split)[:8]
    batches = []
    for u in utterances:
        wav = load_audio(u.audio)
        batches.append((padded(wav, 2.0)[None], np.array([len(wav)])))
    tokenizer, _ = fit_semantic_tokenizer(model, model.config.num_mlm_layers, batches, clusters,
                                          jax.random.key(seed), iters=10)
    codec = init_codec(codec_config(["models/codec_tiny"], TINY_CODEC_ABX), seed)
    return tokenizer, codec


def abx_part(args) -> dict[str, Any]:
    from audiolm_jax.eval.semantic_abx import run_abx  # noqa: PLC0415

    tokenizer = w2v_bert = codec = None
    models: dict[str, Any] = {}
    if args.tiny:
        tokenizer, codec = tiny_models(args.corpus, args.split, args.seed)
        models["tiny_random_init"] = True
    if args.tokenizer:
        from audiolm_jax.semantic.tokenizer import SemanticTokenizer  # noqa: PLC0415
        tokenizer = SemanticTokenizer.load(args.tokenizer)
        models["tokenizer"] = os.path.abspath(args.tokenizer)
    if args.w2v_bert:
        from audiolm_jax.semantic.fit import load_checkpoint_model  # noqa: PLC0415
        w2v_bert, step, ckpt = load_checkpoint_model(args.w2v_bert)
        models["w2v_bert"] = {"checkpoint": str(ckpt), "step": step}
    if args.codec:
        from audiolm_jax.codec.frozen import load_codec  # noqa: PLC0415
        codec = load_codec(args.codec, args.codec_gin or None, compute_dtype="float32")
        models["codec"] = os.path.abspath(args.codec)
    if tokenizer is None and w2v_bert is None and codec is None:
        print("abx: no --tokenizer, --w2v-bert, --codec or --tiny: only log_mel is measured",
              file=sys.stderr)
    result = run_abx(args.corpus, args.split, tokenizer=tokenizer, w2v_bert=w2v_bert, codec=codec,
                     max_items=args.max_items, token_mode=args.token_mode,
                     max_group_size=args.max_group_size, seed=args.seed)
    result["models"] = models
    return result


# --- throughput ------------------------------------------------------------------------------

def _median_time(fn, warmup: int, repeats: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def measure_throughput(w2v_gin: str, codec_gin: str, *, batch_size: int, seconds: float,
                       layer: int = 7, clusters: int = 1024, warmup: int = 2, repeats: int = 5,
                       dtype: str = "bfloat16", seed: int = 0) -> dict[str, Any]:
    """Hours of audio tokenized per wall hour by semantic tokenizer + codec, random weights."""
    from audiolm_jax.semantic.tokenizer import SemanticTokenizer  # noqa: PLC0415
    from audiolm_jax.semantic.w2v_bert import count_params  # noqa: PLC0415

    w_cfg = w2v_config(w2v_gin)
    layer = min(layer, w_cfg.num_mlm_layers)
    model = init_w2v_bert(w_cfg, seed, jnp.dtype(dtype))
    rng = np.random.default_rng(seed)
    centroids = rng.standard_normal((clusters, w_cfg.model_dim)).astype(np.float32)
    tokenizer = SemanticTokenizer(model, layer, np.zeros(w_cfg.model_dim), np.ones(w_cfg.model_dim),
                                  centroids)
    w2v_params = count_params(model)
    del model
    c_cfg = dataclasses.replace(codec_config([codec_gin]), compute_dtype=dtype)
    codec = init_codec(c_cfg, seed)
    graphdef, state = nnx.split(codec)
    encode = jax.jit(lambda s, w: nnx.merge(graphdef, s).encode(w, c_cfg.num_quantizers))

    samples = int(round(seconds * 16000)) // 640 * 640
    wav = jnp.asarray(np.clip(rng.normal(0, 0.1, (batch_size, samples)), -1, 1), jnp.float32)
    start = time.perf_counter()
    jax.block_until_ready(tokenizer.tokenize(wav))
    jax.block_until_ready(encode(state, wav))
    compile_s = time.perf_counter() - start
    sem_s, sem_times = _median_time(lambda: tokenizer.tokenize(wav), warmup, repeats)
    codec_s, codec_times = _median_time(lambda: encode(state, wav), warmup, repeats)
    both_s, both_times = _median_time(lambda: (tokenizer.tokenize(wav), encode(state, wav)),
                                      warmup, repeats)
    audio_s = batch_size * samples / 16000.0
    return {
        "tokenize_hours_per_hour": audio_s / both_s,
        "semantic_hours_per_hour": audio_s / sem_s, "codec_hours_per_hour": audio_s / codec_s,
        "batch_size": batch_size, "seconds_per_example": samples / 16000.0,
        "median_s": {"both": both_s, "semantic": sem_s, "codec": codec_s},
        "times_s": {"both": _rounded(both_times), "semantic": _rounded(sem_times),
                    "codec": _rounded(codec_times)},
        "compile_s": compile_s, "warmup": warmup, "repeats": repeats, "compute_dtype": dtype,
        "w2v_bert": {"gin": w2v_gin, "params": int(w2v_params), "layer": layer,
                     "clusters": clusters},
        "codec": {"gin": codec_gin, "num_quantizers": c_cfg.num_quantizers,
                  "params": int(sum(x.size for x in jax.tree.leaves(nnx.state(codec, nnx.Param))))},
        "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
        "weights": "random init (throughput does not depend on them)",
    }


def _rounded(times: list[float]) -> list[float]:
    return [round(t, 6) for t in times]


# --- main ------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokenizer", help="SemanticTokenizer directory (audiolm-jax semantic fit-kmeans)")
    p.add_argument("--w2v-bert", help="w2v-BERT training run (workdir or checkpoints/) whose MLM "
                                      "layers are scored; default: the tokenizer's model")
    p.add_argument("--codec", help="codec checkpoint or generator export (load_codec)")
    p.add_argument("--codec-gin", nargs="*", default=[],
                   help="codec gin file(s) when --codec has no operative_config.gin")
    p.add_argument("--corpus", default="outputs/demo/world/speech")
    p.add_argument("--split", default="heldout_voices")
    p.add_argument("--max-items", type=int, default=None, help="cap on ABX items (whole utterances)")
    p.add_argument("--max-group-size", type=int, default=10)
    p.add_argument("--token-mode", choices=("embedding", "onehot"), default="embedding")
    p.add_argument("--tiny", action="store_true", help="random-init tiny models (CPU smoke run)")
    p.add_argument("--skip-abx", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--w2v-gin", default=None, help="default models/w2v_bert_xl (--tiny: _tiny)")
    p.add_argument("--codec-model-gin", default=None,
                   help="throughput codec, default models/codec_paper_speech (--tiny: codec_tiny)")
    p.add_argument("--batch-size", type=int, default=None, help="default 16 (--tiny: 2)")
    p.add_argument("--seconds", type=float, default=None, help="default 10 (--tiny: 2)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dtype", default=None, help="throughput compute dtype; default bfloat16 on "
                                                 "accelerators, float32 on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/semantic.json")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    previous: dict[str, Any] = {}
    if os.path.isfile(args.out):
        with open(args.out) as f:
            previous = json.load(f)
        if previous.get("benchmark") != "semantic":
            raise SystemExit(f"{args.out} is not a semantic benchmark result; pass another --out")
    run = {"command": command_line(argv, __file__), "date": utc_now(), "machine": machine_info()}
    result = dict(previous, benchmark="semantic")
    if not args.skip_abx:
        abx = abx_part(args)
        abx.update(run)
        result.update(abx_within=abx["abx_within"], abx_across=abx["abx_across"], abx=abx)
    if not args.skip_throughput:
        cpu = jax.default_backend() == "cpu"
        throughput = measure_throughput(
            args.w2v_gin or ("models/w2v_bert_tiny" if args.tiny else "models/w2v_bert_xl"),
            args.codec_model_gin or ("models/codec_tiny" if args.tiny else
                                     "models/codec_paper_speech"),
            batch_size=args.batch_size or (2 if args.tiny else 16),
            seconds=args.seconds or (2.0 if args.tiny else 10.0), repeats=args.repeats,
            dtype=args.dtype or ("float32" if cpu else "bfloat16"), seed=args.seed)
        throughput.update(run)
        result.update(tokenize_hours_per_hour=throughput["tokenize_hours_per_hour"],
                      throughput=throughput)
    write_json(args.out, result)
    summary = {k: result.get(k) for k in ("abx_within", "abx_across", "tokenize_hours_per_hour")}
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
