"""Generation speed: a 3 s prompt continued by 10 s of audio, end to end, on the default device.

    python benchmarks/generate.py --out results/generate.json              # paper size (GPU)
    python benchmarks/generate.py --tiny --batch-sizes 1 2 --out /tmp/g.json   # CPU smoke test

Paper size: three stage LMs of gin models/lm_paper (12 layers, 16 heads, d=1024, ff=4096, bf16)
over the paper's vocabulary (K=1024, Q=12, N=1024: 13,315 ids), Q'=4, the paper codec
(models/codec_paper_speech) and a w2v-BERT XL tokenizer (models/w2v_bert_xl, layer 7, K=1024),
all randomly initialised: weights do not change the work done. `--tiny` swaps in the tiny
configs (lm_tiny, codec_tiny, a tiny w2v-BERT; K=64, Q=4, N=32, Q'=2) and float32.

End to end = prompt audio in memory -> semantic ids + codes -> stage 1 -> stage 2 -> stage 3 ->
codec decode -> audio in host memory (`AudioLM.continuation`). One untimed call compiles every
program; the figure is the median of `--repeats` calls on the same inputs. The semantic stage
generates `--semantic-rate` tokens per second of audio (25 = no repeated tokens, the most work;
random models make the rate measured on a prompt meaningless). Batch B = B prompts, 1 sample each.

Keys: batch1_seconds_for_10s (wall seconds for 10 s of audio at batch 1; target <= 1.5),
batch64_audio_seconds_per_second (generated seconds per wall second at batch 64; target >= 200),
ms per decoding step of each stage (stage wall time / sequential decoding steps, counted from
the decoding loops the call ran), per batch; `roofline` per stage: the bytes its loops must read
(weights each step, the KV-cache slots each step attends to), the time that takes at the device's
HBM bandwidth and the fraction of it the measured stage time reached
(audiolm_jax/generate/roofline.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from audiolm_jax.codec.frozen import soundstream_config_from_gin  # noqa: E402
from audiolm_jax.codec.soundstream import SoundStream  # noqa: E402
from audiolm_jax.config import resolve_gin_file  # noqa: E402
from audiolm_jax.device_specs import hbm_bandwidth  # noqa: E402
from audiolm_jax.eval.run_info import command_line, machine_info, utc_now, write_json  # noqa: E402
from audiolm_jax.generate.pipeline import STAGE_SPAN, AudioLM, GenerationConfig  # noqa: E402
from audiolm_jax.generate.roofline import DecodeCall, stage_roofline  # noqa: E402
from audiolm_jax.generate.sampling import DecodeLoop, record_calls  # noqa: E402
from audiolm_jax.gin_reader import dataclass_from_gin  # noqa: E402
from audiolm_jax.lm.attention import DECODE_ATTENTION, KV_CACHES  # noqa: E402
from audiolm_jax.lm.int8 import WEIGHTS  # noqa: E402
from audiolm_jax.lm.config import TransformerConfig  # noqa: E402
from audiolm_jax.lm.layouts import AudioVocabulary  # noqa: E402
from audiolm_jax.lm.transformer import Transformer  # noqa: E402
from audiolm_jax.semantic.tokenizer import SemanticTokenizer  # noqa: E402
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig  # noqa: E402
from kernel_trace import kernel_summary  # noqa: E402

TARGET_BATCH1_SECONDS = 1.5
TARGET_BATCH64_RATE = 200.0
TINY_W2V = W2vBertConfig(model_dim=32, num_heads=4, ff_dim=64, num_contrastive_layers=1,
                         num_mlm_layers=2, subsample_channels=8, codebook_groups=1,
                         codebook_entries=16, codevector_dim=16, contrastive_dim=16)


def _gin(name: str) -> list[tuple[str, str]]:
    path = resolve_gin_file(name)
    return [(Path(path).read_text(), path)]


def build(tiny: bool, dtype: str, seed: int) -> tuple[AudioLM, dict]:
    """Random-weight AudioLM of the paper's (or the tiny) sizes, and a description of it."""
    codec_config = soundstream_config_from_gin(_gin("models/codec_tiny" if tiny
                                                    else "models/codec_paper_speech"))
    codec_config = dataclasses.replace(codec_config, compute_dtype=dtype)
    codec = SoundStream(codec_config, rngs=nnx.Rngs(seed))
    codec.eval()
    if tiny:
        w2v_config, layer, clusters = TINY_W2V, 1, 64
    else:
        w2v_config, layer, clusters = dataclass_from_gin(W2vBertConfig, _gin("models/w2v_bert_xl")), 7, 1024
    w2v = W2vBert(w2v_config, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    dim = w2v_config.model_dim
    tokenizer = SemanticTokenizer(w2v, layer, np.zeros(dim), np.ones(dim),
                                  rng.standard_normal((clusters, dim)))
    vocab = AudioVocabulary(clusters, codec_config.num_quantizers, codec_config.codebook_size)
    lm_config = dataclass_from_gin(TransformerConfig, _gin("models/lm_tiny" if tiny else "models/lm_paper"))
    lm_config = dataclasses.replace(lm_config, vocab_size=vocab.size, dtype=dtype)
    models = [Transformer(lm_config, rngs=nnx.Rngs(seed + i)) for i in range(3)]
    num_coarse = 2 if tiny else 4
    params = lambda m: int(sum(x.size for x in jax.tree.leaves(nnx.state(m, nnx.Param))))  # noqa: E731
    about = {"tiny": tiny, "dtype": dtype, "vocabulary": dataclasses.asdict(vocab),
             "vocab_size": vocab.size, "num_coarse": num_coarse,
             "stage_config": dataclasses.asdict(lm_config), "stage_params": params(models[0]),
             "codec_params": params(codec), "w2v_bert_params": params(w2v), "random_init": True}
    return AudioLM(*models, codec, tokenizer, num_coarse=num_coarse), about


def stage_calls(lm: AudioLM, calls: list[DecodeCall]) -> dict[str, list[DecodeCall]]:
    """The decoding loops one call ran, by stage (told apart by the model that ran them)."""
    names = {id(lm.semantic_model): "semantic", id(lm.coarse_model): "coarse",
             id(lm.fine_model): "fine"}
    by_stage: dict[str, list[DecodeCall]] = {}
    for call in calls:
        by_stage.setdefault(names[call.model_id], []).append(call)
    return by_stage


def _prompt(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 120 + 60 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t)
    return (0.3 * np.sin(2 * np.pi * np.cumsum(f0) / 16000) + 0.01 * rng.standard_normal(t.size)
            ).astype(np.float32)


def profile_call(lm: AudioLM, prompts, seconds: float, steps: dict[str, int]) -> dict:
    """Kernels of one more (compiled) call: kernel time vs wall time shows whether decoding is
    bound by the GPU's work or by launching it (many small kernels per token)."""
    with tempfile.TemporaryDirectory() as trace_dir:
        start = time.perf_counter()
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            lm.continuation(prompts, seconds, seed=0)
        wall = time.perf_counter() - start
        summary = kernel_summary(trace_dir, steps=1, top=30, span_prefix=STAGE_SPAN)
    tokens = sum(steps.values())
    if "kernels_per_step" in summary:
        summary["kernels_per_token"] = summary["kernels_per_step"] / tokens
        summary["kernel_ms_per_token"] = summary["device_ms_per_step"] / tokens
    for stage, span in summary.get("by_span", {}).items():   # the decoding stages' own steps
        if steps.get(stage):
            span["kernels_per_decoding_step"] = span["kernels_per_step"] / steps[stage]
            span["kernel_ms_per_decoding_step"] = span["device_ms_per_step"] / steps[stage]
    summary["wall_seconds_traced"] = wall
    return summary


def run_batch(lm: AudioLM, batch: int, prompt_seconds: float, seconds: float,
              repeats: int, profile: bool = False) -> dict:
    prompts = [_prompt(prompt_seconds, i) for i in range(batch)]
    start = time.perf_counter()
    with record_calls() as calls:
        lm.continuation(prompts, seconds, seed=0)                   # compiles everything
    compile_s = time.perf_counter() - start
    by_stage = stage_calls(lm, calls)
    walls, stages = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        out = lm.continuation(prompts, seconds, seed=0)
        walls.append(time.perf_counter() - start)
        stages.append(out.seconds)
    wall = statistics.median(walls)
    stage_s = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    steps = {stage: sum(c.num_tokens for c in stage_list) for stage, stage_list in by_stage.items()}
    bandwidth = hbm_bandwidth()
    row = {"batch": batch, "wall_seconds": wall, "wall_seconds_all": walls,
            "first_call_seconds_with_compile": compile_s,
            "audio_seconds_per_second": batch * seconds / wall,
            "real_time_factor": wall / seconds, "stage_seconds": stage_s,
            "decoding_steps": steps,
            "ms_per_decoding_step": {k: 1000.0 * stage_s[k] / steps[k] for k in steps
                                     if k in stage_s and steps[k]},
            "roofline": {stage: stage_roofline(stage_list, stage_s.get(stage), bandwidth)
                         for stage, stage_list in by_stage.items()},
            "output_shape": list(out.wavs.shape)}
    if profile:
        row["kernels"] = profile_call(lm, prompts, seconds, steps)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs (CPU smoke test)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--prompt-seconds", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio generated per row")
    parser.add_argument("--semantic-rate", type=float, default=25.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default=None, help="default: float32 with --tiny, else bfloat16")
    parser.add_argument("--fine-max-batch", type=int, default=128)
    parser.add_argument("--fine-chunk-seconds", type=float, default=3.0,
                        help="stage 3's chunks (GenerationConfig.fine_chunk_s; the paper's 3 s): "
                             "shorter chunks decode in fewer steps with more rows, each with "
                             "less context than the stage was trained on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-phases", type=int, default=1,
                        help="decoding loops per sampling call, each reading only the filled "
                             "part of the KV cache (sampling.DecodeLoop; 1: one loop)")
    parser.add_argument("--kv-cache", default="compute", choices=KV_CACHES,
                        help="KV-cache storage (sampling.DecodeLoop.kv_cache)")
    parser.add_argument("--unroll", type=int, default=1,
                        help="decoding steps per loop iteration (sampling.DecodeLoop.unroll)")
    parser.add_argument("--min-rows", type=int, default=1,
                        help="decode at least this many rows (sampling.DecodeLoop.min_rows)")
    parser.add_argument("--weights", default="compute", choices=WEIGHTS,
                        help="weight matrices in the loop (sampling.DecodeLoop.weights)")
    parser.add_argument("--decode-attention", default="xla", choices=DECODE_ATTENTION,
                        help="attention to the KV cache in the loop (sampling.DecodeLoop.attention)")
    parser.add_argument("--profile", action="store_true",
                        help="trace one more call per batch: kernel time and kernels per token")
    parser.add_argument("--out", default="results/generate.json")
    args = parser.parse_args(argv)
    dtype = args.dtype or ("float32" if args.tiny else "bfloat16")
    lm, about = build(args.tiny, dtype, args.seed)
    lm.config = dataclasses.replace(lm.config, semantic_tokens_per_second=args.semantic_rate,
                                    fine_max_batch=args.fine_max_batch,
                                    fine_chunk_s=args.fine_chunk_seconds,
                                    loop=DecodeLoop(cache_phases=args.cache_phases,
                                                    kv_cache=args.kv_cache, unroll=args.unroll,
                                                    min_rows=args.min_rows,
                                                    weights=args.weights,
                                                    attention=args.decode_attention))
    runs = {}
    for batch in args.batch_sizes:
        runs[str(batch)] = run_batch(lm, batch, args.prompt_seconds, args.seconds, args.repeats,
                                    args.profile)
        print(f"batch {batch}: {runs[str(batch)]['wall_seconds']:.2f} s for {args.seconds:g} s "
              f"per row, {runs[str(batch)]['audio_seconds_per_second']:.1f} audio s/s, ms/step "
              f"{ {k: round(v, 3) for k, v in runs[str(batch)]['ms_per_decoding_step'].items()} }",
              flush=True)
    per_10s = 10.0 / args.seconds
    result = {
        "benchmark": "generate", "date": utc_now(), "command": command_line(argv),
        "machine": machine_info(), "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind), "models": about,
        "prompt_seconds": args.prompt_seconds, "generated_seconds": args.seconds,
        "semantic_tokens_per_second": args.semantic_rate, "repeats": args.repeats,
        "cache_phases": args.cache_phases, "kv_cache": args.kv_cache, "unroll": args.unroll,
        "min_rows": args.min_rows, "weights": args.weights,
        "decode_attention": args.decode_attention,
        "fine_chunk_seconds": args.fine_chunk_seconds,
        "runs": runs,
        "targets": {"batch1_seconds_for_10s": TARGET_BATCH1_SECONDS,
                    "batch64_audio_seconds_per_second": TARGET_BATCH64_RATE},
    }
    if "1" in runs:
        result["batch1_seconds_for_10s"] = runs["1"]["wall_seconds"] * per_10s
        result["batch1_ms_per_decoding_step"] = runs["1"]["ms_per_decoding_step"]
    if "64" in runs:
        result["batch64_audio_seconds_per_second"] = runs["64"]["audio_seconds_per_second"]
        result["batch64_ms_per_decoding_step"] = runs["64"]["ms_per_decoding_step"]
    result["hbm_bytes_per_second"] = hbm_bandwidth()
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
