"""Stage-2 weak scaling over 1, 2, 4, 8 devices and data / fsdp / mixed meshes (issue #12).

Measure (GPU, or simulated CPU devices with --tiny): for each count n in --counts that the
machine has, the first n devices train the paper-size stage-2 Transformer (length 2251, prefix
251, bf16) through the real trainer (`train_stage.run_one`), global batch = --per-device-batch
x n, under each mesh of `meshes_for(n)`. tokens/s per count is the best mesh's; weak-scaling
efficiency(n) = tokens_per_s(n) / (n x tokens_per_s(1)).

TPU AOT (--tpu-aot, needs the `tpu-aot` extra, i.e. libtpu): the same train step and meshes are
compiled ahead of time for TPU topologies (no TPU needed) with `audiolm_jax.training.aot`, and
XLA's memory per device and FLOPs are recorded under `tpu_aot`. Nothing is measured then.

    python3 benchmarks/scaling.py                                   # every GPU the machine has
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python3 benchmarks/scaling.py --tiny \
        --out /tmp/scaling.json                                     # CPU smoke
    python3 benchmarks/scaling.py --tpu-aot v4:2x2x1,v4:2x2x2       # CPU box, libtpu installed

Both modes update results/scaling.json in place: a measurement keeps `tpu_aot`, an AOT run
keeps the measurement.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import jax  # noqa: E402

import train_stage  # noqa: E402
from audiolm_jax.device_specs import peak_flops_per_device  # noqa: E402
from audiolm_jax.lm.flops import param_count  # noqa: E402
from audiolm_jax.training.mesh import MeshConfig  # noqa: E402

COUNTS = (1, 2, 4, 8)
# Per chip, for the AOT fit verdict; compile-only topology devices report no memory of their own.
TPU_HBM_BYTES = {"v4": 32 * 2**30, "v5e": 16 * 2**30, "v5p": 95 * 2**30, "v6e": 32 * 2**30}
# How a TPU generation's chips appear as JAX devices (megacore: one device per v4/v5p chip).
TPU_TOPOLOGY_KWARGS = {
    "v4": {"chip_config_name": "megacore", "chips_per_host_bounds": (2, 2, 1), "num_slices": 1},
    "v5p": {"chip_config_name": "megacore", "chips_per_host_bounds": (2, 2, 1), "num_slices": 1},
}


def meshes_for(n: int) -> list[tuple[int, int, int]]:
    """(data, fsdp, tensor) meshes of n devices: data, fsdp, data x fsdp, data x tensor,
    data x fsdp x tensor, where the factors divide n (duplicates dropped)."""
    candidates = [(n, 1, 1), (1, n, 1), (n // 2, 2, 1), (n // 2, 1, 2), (n // 4, 2, 2)]
    out = []
    for d, f, t in candidates:
        if d >= 1 and d * f * t == n and (d, f, t) not in out:
            out.append((d, f, t))
    return out


def resolve_mesh(spec: str, n: int) -> tuple[int, int, int]:
    """"DxFxT" with at most one -1 (the devices the others leave), e.g. "-1x1x2"."""
    d, f, t = (int(x) for x in spec.split("x"))
    rest = n // abs(d * f * t)
    return (rest if d == -1 else d, rest if f == -1 else f, rest if t == -1 else t)


def mesh_name(mesh: tuple[int, int, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in zip(("data", "fsdp", "tensor"), mesh))


def stage2_shape(tiny: bool) -> tuple[int, int]:
    length, prefix = train_stage.STAGES["stage2"]
    return (length // 10, prefix // 10) if tiny else (length, prefix)


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:600]


def measure_one(config, length, prefix, batch, steps, mesh, devices, peak) -> dict:
    """train_stage.run_one on `devices` (the first n of the machine's)."""
    row = train_stage.run_one(config, length, prefix, batch, steps, MeshConfig(*mesh), peak,
                              devices=devices)
    return row


def measure(args, config) -> dict:
    length, prefix = stage2_shape(args.tiny)
    peak = peak_flops_per_device()
    counts = [n for n in args.counts if n <= jax.device_count()]
    runs, best = [], {}
    for n in counts:
        devices = jax.devices()[:n]
        for mesh in meshes_for(n):
            row = {"devices": n, "mesh": mesh_name(mesh), "per_device_batch": args.per_device_batch}
            try:
                row.update(measure_one(config, length, prefix, args.per_device_batch * n,
                                       args.steps, mesh, devices, peak))
            except Exception as e:  # noqa: BLE001 - an OOM or an unsupported mesh is a result
                row.update(batch=args.per_device_batch * n, length=length, error=error_text(e))
            runs.append(row)
            print(json.dumps(row), flush=True)
            if row.get("tokens_per_s", 0) > best.get(n, {}).get("tokens_per_s", 0):
                best[n] = row
    base = best.get(1, {}).get("tokens_per_s")
    return {
        "tokens_per_s": {str(n): r["tokens_per_s"] for n, r in best.items()},
        "efficiency": {str(n): (r["tokens_per_s"] / (n * base) if base else None)
                       for n, r in best.items()},
        "best_mesh": {str(n): r["mesh"] for n, r in best.items()},
        "target_efficiency_8": 0.9,
        "runs": runs,
        "measure": {
            "command": " ".join(["python3", "benchmarks/scaling.py", *sys.argv[1:]]),
            "date": datetime.date.today().isoformat(), "host": platform.node(),
            "device": jax.devices()[0].device_kind, "devices_on_machine": jax.device_count(),
            "backend": jax.default_backend(), "jax": jax.__version__, "counts": counts,
            "stage": "stage2", "length": length, "prefix": prefix,
            "per_device_batch": args.per_device_batch, "steps": args.steps, "remat": args.remat,
            "dtype": config.dtype, "params": param_count(config),
            "peak_flops_per_device": peak, "tiny": args.tiny, "attention": config.attention,
        },
    }


def tpu_aot(args, config, save=lambda section: None) -> dict:
    """Compiles the stage-2 train step for each topology x mesh; rows carry errors too."""
    from audiolm_jax.lm.objective import StageObjective  # noqa: PLC0415
    from audiolm_jax.training.aot import compile_train_step, topology_devices  # noqa: PLC0415
    from audiolm_jax.training.optim import OptimizerConfig  # noqa: PLC0415

    length, _ = stage2_shape(args.tiny)
    try:
        import libtpu  # noqa: PLC0415
        libtpu_version = getattr(libtpu, "__version__", None)
    except ImportError:
        libtpu_version = None
    rows = []
    section = {
        "command": " ".join(["python3", "benchmarks/scaling.py", *sys.argv[1:]]),
        "date": datetime.date.today().isoformat(), "host": platform.node(),
        "host_cpus": os.cpu_count(), "jax": jax.__version__, "libtpu": libtpu_version,
        "stage": "stage2", "remat": args.remat, "dtype": config.dtype,
        "attention": config.attention,
        "params": param_count(config), "runs": rows,
    }
    for topology in args.tpu_aot.split(","):
        generation = topology.split(":")[0]
        kwargs = TPU_TOPOLOGY_KWARGS.get(generation, {})
        try:
            n = len(topology_devices(topology, **kwargs))
        except Exception as e:  # noqa: BLE001 - no libtpu, unknown topology: recorded
            rows.append({"topology": topology, "error": error_text(e)})
            print(json.dumps(rows[-1]), flush=True)
            continue
        meshes = [resolve_mesh(m, n) for m in args.aot_meshes] if args.aot_meshes \
            else meshes_for(n)
        for mesh in meshes:
            batch = args.per_device_batch * n
            row = {"topology": topology, "devices": n, "mesh": mesh_name(mesh),
                   "per_device_batch": args.per_device_batch, "batch": batch, "length": length}
            shapes = {"inputs": ((batch, length), "int32"), "targets": ((batch, length), "int32"),
                      "loss_mask": ((batch, length), "float32")}
            start = time.perf_counter()
            try:
                report = compile_train_step(
                    StageObjective(config, OptimizerConfig(learning_rate=1e-4)),
                    shapes, mesh_config=MeshConfig(*mesh), topology=topology,
                    topology_kwargs=kwargs, compute_dtype=config.dtype,
                    device_memory_bytes=TPU_HBM_BYTES.get(generation), print_report=False)
                row.update(device_kind=report.device_kind,
                           peak_bytes_per_device=report.peak_bytes,
                           argument_bytes=report.argument_bytes, output_bytes=report.output_bytes,
                           alias_bytes=report.alias_bytes, temp_bytes=report.temp_bytes,
                           code_bytes=report.code_bytes,
                           device_memory_bytes=report.device_memory_bytes, fits=report.fits,
                           flops_per_device=report.flops_per_device)
            except Exception as e:  # noqa: BLE001 - the TPU compiler refuses what does not fit
                row["error"] = error_text(e)
                need = re.search(r"HLO temporaries \(([\d.]+)G\) exceeds available HBM "
                                 r"\(([\d.]+)G\)", str(e))
                if need:
                    row.update(fits=False, temp_bytes_required=float(need.group(1)) * 2**30,
                               hbm_available_bytes=float(need.group(2)) * 2**30)
            row["compile_seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
            save(section)  # a paper-size TPU compile takes many minutes on a small CPU box
    return section


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", default="1,2,4,8", help="device counts, those <= the machine's")
    p.add_argument("--per-device-batch", type=int, default=None,
                   help="sequences per device (default 16, train_stage.py's stage-2 batch; "
                        "2 with --tiny)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--remat", default="none", help="none, full or save_dots")
    p.add_argument("--tiny", action="store_true", help="tiny model, length 225 (CPU smoke)")
    p.add_argument("--attention", default="fast", choices=("fast", "split"),
                   help="split: the T5 bias on a band in XLA, the rest through a flash kernel "
                        "(splash on TPUs); fast: the model's default")
    p.add_argument("--tpu-aot", default=None,
                   help="comma-separated TPU topologies to compile for instead of measuring, "
                        "e.g. v4:2x2x1,v4:2x2x2 (needs libtpu: pip install -e '.[tpu-aot]')")
    p.add_argument("--aot-meshes", nargs="*", default=None,
                   help="DxFxT meshes for --tpu-aot, one may be -1 (default: meshes_for(devices))")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "scaling.json"))
    args = p.parse_args(argv)
    args.counts = [int(c) for c in args.counts.split(",")]
    if args.per_device_batch is None:
        args.per_device_batch = 2 if args.tiny else 16
    if args.tpu_aot:
        # Compile-only TPU devices: no TPU client, and no /tmp/libtpu_lockfile claim (which would
        # shut out a second compiling process on the same machine).
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
        if not os.environ.get("JAX_PLATFORMS"):
            jax.config.update("jax_platforms", "cpu")

    config = train_stage.paper_config(args.tiny, args.remat, attention=args.attention)
    out = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            out = json.load(f)
    def save(section=None):
        if section is not None:
            out["tpu_aot"] = section
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)

    if args.tpu_aot:
        save(tpu_aot(args, config, save))
    else:
        out.update(measure(args, config))
        save()
    print(json.dumps({k: out.get(k) for k in ("tokens_per_s", "efficiency", "best_mesh")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
