"""Each 1-D convolution of the codec's training step, timed in every form of
`audiolm_jax.codec.conv_forms` (issue #5: more codec steps per time box).

The convolutions are read from the jaxpr of the generator and discriminator forward passes at the
experiment's batch and crop (so the list is the model's, not a copy of it): every
`conv_general_dilated`; those with 1-D channels-last operands and no input dilation are timed in
each form, the others (the decoder's transposed convolutions, the STFT discriminator's 2-D ones)
as they are. Each distinct layer
is timed forward and backward (gradients for input and kernel, as training takes them) in the
compute dtype, median of `--repeats` calls, for each form that applies; the JSON gives per layer
the ms of each form and the best, and the step's total for "xla everywhere" against "best form
per layer" (each layer weighted by how often the forward pass runs it).

    python3 benchmarks/codec_conv_forms.py --out results/codec_conv_forms.json        # GPU
    python3 benchmarks/codec_conv_forms.py --gin experiments/codec_tiny_cpu --batch 2 \\
        --seconds 0.5 --repeats 1 --out /tmp/conv_forms.json                           # CPU smoke
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from audiolm_jax.codec.conv_forms import FORMS, conv1d  # noqa: E402


def codec_convolutions(gin_file: str, bindings: list[str], batch: int, seconds: float):
    """[(layer key, occurrences)] of the 1-D convolutions in one generator + discriminators
    forward pass, and a Counter of the convolutions not timed (by kind)."""
    import gin  # noqa: PLC0415
    from flax import nnx  # noqa: PLC0415
    from jax.extend.core import jaxprs_in_params  # noqa: PLC0415

    from audiolm_jax import config as gin_config  # noqa: PLC0415
    from audiolm_jax.codec.objective import CodecObjective  # noqa: PLC0415

    gin.clear_config()
    gin_config.parse_gin([gin_file], bindings, finalize=False)
    objective = CodecObjective()
    model = nnx.eval_shape(lambda: objective.create_model(nnx.Rngs(0)))
    samples = int(seconds * objective.model_config.sample_rate)
    samples -= samples % objective.model_config.hop_length
    dtype = jnp.dtype(objective.model_config.compute_dtype)

    def forward(model, wav):
        out = model.generator(wav, train=False)
        return model.discriminators(out.reconstructed.astype(dtype))

    graph, state = nnx.split(model)
    jaxpr = jax.make_jaxpr(lambda s, w: forward(nnx.merge(graph, s), w))(
        state, jax.ShapeDtypeStruct((batch, samples), jnp.float32))
    timed, skipped, others = collections.Counter(), collections.Counter(), collections.Counter()

    def walk(jx):
        for eqn in jx.eqns:
            for sub in jaxprs_in_params(eqn.params):
                walk(sub)
            if eqn.primitive.name != "conv_general_dilated":
                continue
            p = eqn.params
            lhs, rhs = (v.aval for v in eqn.invars[:2])
            kind = ("2-D" if lhs.ndim != 3 else
                    "transposed (input dilation)" if any(d != 1 for d in p["lhs_dilation"]) else
                    "not channels-last" if tuple(p["dimension_numbers"].lhs_spec) != (0, 2, 1)
                    else None)
            if kind:
                skipped[kind] += 1
                others[(kind, tuple(lhs.shape), tuple(rhs.shape), str(lhs.dtype),
                        tuple(p["window_strides"]), tuple(map(tuple, p["padding"])),
                        tuple(p["lhs_dilation"]), tuple(p["rhs_dilation"]),
                        p["dimension_numbers"], p["feature_group_count"])] += 1
            else:
                timed[(tuple(lhs.shape), tuple(rhs.shape), str(lhs.dtype), p["window_strides"][0],
                       p["rhs_dilation"][0], tuple(p["padding"][0]),
                       p["feature_group_count"])] += 1

    walk(jaxpr.jaxpr)
    return (sorted(timed.items(), key=lambda kv: -np.prod(kv[0][0])), skipped,
            sorted(others.items(), key=lambda kv: -np.prod(kv[0][1])))


def applicable(form: str, stride: int, groups: int) -> bool:
    return not (form == "project_shift" and stride != 1) and not (
        form == "supergroup" and groups % 2)


def _median_ms(conv, x_shape, w_shape, dtype, repeats: int) -> float:
    """Median ms of one forward + backward (input and kernel gradients) of `conv(x, w)` on
    random operands, compiled first."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), dtype)
    w = jnp.asarray(rng.standard_normal(w_shape) * 0.05, dtype)
    step = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w).astype(jnp.float32) ** 2),
                            argnums=(0, 1)))
    jax.block_until_ready(step(x, w))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(x, w))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def time_form(key, form: str, repeats: int) -> float:
    """A 1-D layer (a key of `codec_convolutions`) in `form`."""
    x_shape, w_shape, dtype, stride, dilation, padding, groups = key
    return _median_ms(lambda x, w: conv1d(x, w, stride=stride, dilation=dilation,
                                          padding=padding, groups=groups, form=form),
                      x_shape, w_shape, dtype, repeats)


def time_primitive(key, repeats: int) -> float:
    """A convolution no form applies to (2-D, transposed), with the parameters the model's
    jaxpr gave it."""
    _, x_shape, w_shape, dtype, strides, padding, lhs_dil, rhs_dil, numbers, groups = key
    return _median_ms(lambda x, w: jax.lax.conv_general_dilated(
        x, w, strides, padding, lhs_dil, rhs_dil, numbers, feature_group_count=groups),
        x_shape, w_shape, dtype, repeats)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gin", default="experiments/codec_speech_small_world")
    p.add_argument("--gin-binding", action="append", default=[])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--forms", default=",".join(FORMS))
    p.add_argument("--out", default="results/codec_conv_forms.json")
    args = p.parse_args(argv)
    forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    if not forms or any(f not in FORMS for f in forms):
        p.error(f"--forms {args.forms!r}: a comma list from {FORMS}")

    from audiolm_jax.eval.run_info import command_line, machine_info, utc_now, write_json  # noqa

    layers, skipped, others = codec_convolutions(args.gin, args.gin_binding, args.batch,
                                                 args.seconds)
    rows, totals = [], collections.Counter()
    for key, count in layers:
        x_shape, w_shape, dtype, stride, dilation, padding, groups = key
        ms = {f: time_form(key, f, args.repeats) for f in forms if applicable(f, stride, groups)}
        best = min(ms, key=ms.get)
        rows.append({"x": list(x_shape), "w": list(w_shape), "dtype": dtype, "stride": stride,
                     "dilation": dilation, "padding": list(padding), "groups": groups,
                     "count": count, "ms": ms, "best": best})
        totals["xla"] += count * ms.get("xla", 0.0)
        totals["best"] += count * ms[best]
        print(f"x {x_shape} w {w_shape} stride {stride} dil {dilation} groups {groups} "
              f"x{count}: " + ", ".join(f"{f} {v:.3f} ms" for f, v in ms.items())
              + f" -> {best}", flush=True)
    xla_only = []
    for key, count in others:
        ms = time_primitive(key, args.repeats)
        xla_only.append({"kind": key[0], "x": list(key[1]), "w": list(key[2]), "dtype": key[3],
                         "strides": list(key[4]), "lhs_dilation": list(key[6]),
                         "groups": key[9], "count": count, "ms": {"xla": ms}})
        totals["xla"] += count * ms
        totals["best"] += count * ms
        print(f"{key[0]}: x {key[1]} w {key[2]} x{count}: xla {ms:.3f} ms", flush=True)
    result = {"benchmark": "codec_conv_forms", "gin": args.gin, "bindings": args.gin_binding,
              "batch": args.batch, "crop_seconds": args.seconds, "backend": jax.default_backend(),
              "device": jax.devices()[0].device_kind, "repeats": args.repeats, "layers": rows,
              "xla_only_layers": xla_only, "xla_only_counts": dict(skipped),
              "ms_forward_backward_all_layers": {"xla": totals["xla"], "best_per_layer":
                                                 totals["best"]},
              "date": utc_now(), "command": command_line(), "machine": machine_info()}
    write_json(args.out, result)
    print(f"all timed layers, forward + backward: xla {totals['xla']:.1f} ms, best form per "
          f"layer {totals['best']:.1f} ms (xla only: {dict(skipped)}); wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
