"""The memory roof of benchmarks/generate.py's call on a device you do not hold (arithmetic).

    python benchmarks/decode_roofline.py --batch 64 --cache-phases 4 --device-kind "NVIDIA H200" \
        --out results/generate_roofline_b64_phases4.json

Runs the same paper-size continuation as benchmarks/generate.py (same random models, prompts,
windows, fine chunks and batching) on this machine, except that every decoding loop is replaced
by uniform random ids from its allowed ranges: nothing is sampled or timed, the run only records
the shape of each loop (`sampling.record_calls`), and `roofline.stage_roofline` turns them into
the bytes each stage must read and the time that takes at the named device's HBM bandwidth.
Put a measured generate.json beside it (`--measured`) to get the fraction of the roof reached.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from unittest import mock

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import generate as bench  # noqa: E402
from audiolm_jax.eval.run_info import command_line, machine_info, utc_now, write_json  # noqa: E402
from audiolm_jax.generate import roofline, sampling  # noqa: E402
from audiolm_jax.lm.attention import DECODE_ATTENTION, KV_CACHES  # noqa: E402
from audiolm_jax.device_specs import HBM_BYTES_PER_SECOND, by_device_kind  # noqa: E402


def _random_ids(graphdef, state, prompts, lengths, allowed, rng, *, num_tokens, num_samples,
                **loop_options):
    """Stands in for `sampling._sample`: ids as random stage models sample them (uniform in each
    position's allowed range, so adjacent repeats, which the semantic dedup drops, are rare)."""
    rows = prompts.shape[0] * num_samples
    return jax.random.randint(rng, (rows, num_tokens), allowed[:, 0][None], allowed[:, 1][None])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cache-phases", type=int, default=1)
    parser.add_argument("--prompt-seconds", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--kv-cache", default="compute", choices=KV_CACHES,
                        help="KV-cache storage (sampling.DecodeLoop.kv_cache)")
    parser.add_argument("--decode-attention", default="xla", choices=DECODE_ATTENTION,
                        help="pallas: each step reads the cache only up to its position "
                             "(sampling.DecodeLoop.attention)")
    parser.add_argument("--fine-max-batch", type=int, default=128)
    parser.add_argument("--fine-chunk-seconds", type=float, default=3.0,
                        help="stage 3's chunks, as generate.py's option of that name")
    parser.add_argument("--device-kind", default="NVIDIA H200",
                        help="matched against HBM_BYTES_PER_SECOND")
    parser.add_argument("--measured", help="a generate.json of the same batch and phases")
    parser.add_argument("--tiny", action="store_true", help="tiny configs (CPU smoke test)")
    parser.add_argument("--out", default="results/generate_roofline.json")
    args = parser.parse_args(argv)
    bandwidth = by_device_kind(HBM_BYTES_PER_SECOND, args.device_kind)
    if bandwidth is None:
        parser.error(f"no HBM bandwidth known for {args.device_kind!r}: one of "
                     f"{[n for n, _ in HBM_BYTES_PER_SECOND]}")
    lm, about = bench.build(args.tiny, "float32" if args.tiny else "bfloat16", 0)
    lm.config = dataclasses.replace(lm.config, semantic_tokens_per_second=25.0,
                                    fine_max_batch=args.fine_max_batch,
                                    fine_chunk_s=args.fine_chunk_seconds,
                                    loop=sampling.DecodeLoop(cache_phases=args.cache_phases,
                                                             kv_cache=args.kv_cache,
                                                             attention=args.decode_attention))
    prompts = [bench._prompt(args.prompt_seconds, i) for i in range(args.batch)]
    with mock.patch.object(sampling, "_sample", _random_ids), sampling.record_calls() as calls:
        lm.continuation(prompts, args.seconds, seed=0)
    by_stage = bench.stage_calls(lm, calls)
    measured = {}
    if args.measured:
        measured = json.loads(Path(args.measured).read_text())["runs"][str(args.batch)][
            "stage_seconds"]
    stages = {stage: roofline.stage_roofline(stage_calls, measured.get(stage), bandwidth)
              for stage, stage_calls in by_stage.items()}
    bound = sum(s["hbm_bound_seconds"] for s in stages.values())
    result = {"benchmark": "decode_roofline", "date": utc_now(), "command": command_line(argv),
              "machine": machine_info(), "models": about, "device_kind": args.device_kind,
              "hbm_bytes_per_second": bandwidth, "batch": args.batch,
              "cache_phases": args.cache_phases, "kv_cache": args.kv_cache,
              "decode_attention": args.decode_attention,
              "fine_chunk_seconds": args.fine_chunk_seconds,
              "prompt_seconds": args.prompt_seconds,
              "generated_seconds": args.seconds, "measured": args.measured,
              "loops": {stage: [{"rows": c.rows, "width": c.width, "num_tokens": c.num_tokens,
                                 "cache_phases": c.cache_phases, "kv_cache": c.kv_cache,
                                 "attention": c.attention}
                                for c in stage_calls]
                        for stage, stage_calls in by_stage.items()},
              "stages": stages, "decoding_hbm_bound_seconds": bound,
              "audio_seconds_per_second_at_the_roof": args.batch * args.seconds / bound}
    for stage, row in stages.items():
        reached = row.get("fraction_of_hbm_bound")
        print(f"{stage}: {row['steps']} steps, {row['gbytes_per_step']:.2f} GB/step, roof "
              f"{row['hbm_bound_seconds']:.3f} s"
              + ("" if reached is None else f", measured at {reached:.2f} of it"))
    print(f"decoding loops at the roof: {bound:.2f} s = "
          f"{result['audio_seconds_per_second_at_the_roof']:.0f} audio-s/s")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
