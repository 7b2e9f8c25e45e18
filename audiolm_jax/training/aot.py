"""Ahead-of-time compilation of a train step for a target mesh or TPU topology.

`lower().compile()` on abstract shapes allocates nothing, so a paper-size config can be checked
for fit on a laptop: with libtpu installed, `topology="v5e:16x16"` compiles for that pod slice;
without it, for the local devices (or simulated CPU devices) under any mesh they can form.

    report = compile_train_step(objective, {"tokens": ((256, 1024), "int32")},
                                mesh_config=MeshConfig(fsdp=16), topology="v5e:4x4")
    print(report.peak_bytes, report.fits)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import gin
import jax
import jax.numpy as jnp

from audiolm_jax.training import partitioning
from audiolm_jax.training.mesh import MeshConfig, make_mesh
from audiolm_jax.training.objective import Objective
from audiolm_jax.training.program import build_program
from audiolm_jax.training.step import StepOptions


@dataclasses.dataclass(frozen=True)
class AotReport:
    """Per-device bytes from XLA's memory analysis of the compiled train step.

    peak_bytes ~ arguments + outputs - donated aliases + temporaries (+ code): what must fit.
    """

    device_kind: str
    mesh_shape: dict[str, int]
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    code_bytes: int
    flops_per_device: float
    device_memory_bytes: int | None

    @property
    def peak_bytes(self) -> int:
        return (
            self.argument_bytes
            + self.output_bytes
            - self.alias_bytes
            + self.temp_bytes
            + self.code_bytes
        )

    @property
    def fits(self) -> bool | None:
        return None if not self.device_memory_bytes else self.peak_bytes <= self.device_memory_bytes

    def summary(self) -> str:
        def gib(b: float) -> str:
            for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
                if b >= scale:
                    return f"{b / scale:.2f} {unit}"
            return f"{int(b)} B"

        lines = [
            f"AOT train step on {self.device_kind}, mesh {self.mesh_shape}, per device:",
            f"  arguments {gib(self.argument_bytes)} (donated {gib(self.alias_bytes)}), "
            f"outputs {gib(self.output_bytes)}, temporaries {gib(self.temp_bytes)}, "
            f"code {gib(self.code_bytes)}",
            f"  peak ~{gib(self.peak_bytes)}"
            + (
                f" of {gib(self.device_memory_bytes)}: {'fits' if self.fits else 'DOES NOT FIT'}"
                if self.device_memory_bytes
                else ""
            ),
            f"  {self.flops_per_device:.3e} FLOPs per device per step (XLA count)",
        ]
        return "\n".join(lines)


def topology_devices(topology: str, platform: str = "tpu", **kwargs: Any) -> list:
    """Devices of a TPU topology description (e.g. "v5e:4x4"; needs libtpu, not the hardware)."""
    from jax.experimental import topologies  # noqa: PLC0415

    try:
        return list(
            topologies.get_topology_desc(
                topology_name=topology, platform=platform, **kwargs
            ).devices
        )
    except Exception as e:  # noqa: BLE001 - backend-specific errors
        raise RuntimeError(
            f"cannot describe topology {topology!r} on platform {platform!r} ({e}); "
            "AOT for a TPU topology needs libtpu installed (pip install -e '.[tpu-aot]')."
        ) from e


@gin.configurable
def compile_train_step(
    objective: Objective | Callable[[], Objective],
    batch: Mapping[str, tuple[Sequence[int], Any]],
    *,
    mesh_config: MeshConfig | None = None,
    axis_rules: Sequence | None = None,
    num_microbatches: int = 1,
    compute_dtype: str = "bfloat16",
    num_train_steps: int = 1000,
    topology: str | None = None,
    topology_kwargs: Mapping[str, Any] | None = None,
    devices: Sequence[jax.Device] | None = None,
    device_memory_bytes: int | None = None,
    print_report: bool = True,
) -> AotReport:
    """Compiles the train step for `batch` = {name: (global shape, dtype)} without any arrays.

    Target: `topology` (TPU, via libtpu), else `devices`, else the local devices.
    device_memory_bytes: the target's memory per device for the fit verdict (default: what the
    local device reports, if anything).
    """
    obj = objective if isinstance(objective, Objective) else objective()
    if topology is not None:
        devices = topology_devices(topology, **dict(topology_kwargs or {}))
    mesh = make_mesh(mesh_config or MeshConfig(), devices)
    rules = (
        partitioning.axis_rules(axis_rules) if axis_rules is not None else partitioning.axis_rules()
    )
    options = StepOptions(num_microbatches=num_microbatches, compute_dtype=jnp.dtype(compute_dtype))
    program = build_program(obj, mesh, rules, options, num_train_steps)
    shapes = {k: (tuple(shape), jnp.dtype(dtype)) for k, (shape, dtype) in batch.items()}
    compiled = program.train_step.lower(
        program.abstract_state, program.abstract_batch(shapes)
    ).compile()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    device = mesh.devices.flat[0]
    if device_memory_bytes is None and topology is None:
        stats = getattr(device, "memory_stats", lambda: None)() or {}
        device_memory_bytes = stats.get("bytes_limit")
    report = AotReport(
        device_kind=device.device_kind,
        mesh_shape=dict(mesh.shape),
        argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes),
        temp_bytes=int(mem.temp_size_in_bytes),
        code_bytes=int(mem.generated_code_size_in_bytes),
        flops_per_device=float(cost.get("flops", 0.0)),
        device_memory_bytes=device_memory_bytes,
    )
    if print_report:
        print(report.summary(), flush=True)
    return report
