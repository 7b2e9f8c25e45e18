"""Multi-host setup: `jax.distributed.initialize` from arguments or the environment, and the
small cross-process exchanges the trainer needs (host data states, batch row ownership).

TPU pods, SLURM and Open MPI jobs are detected by JAX itself. Elsewhere (a GPU cluster
launched by hand, localhost tests) give the coordinator: arguments, or the environment
variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import gin
import jax
import numpy as np

_AUTO_ENV = (
    "TPU_WORKER_HOSTNAMES",
    "MEGASCALE_COORDINATOR_ADDRESS",
    "SLURM_JOB_ID",
    "OMPI_COMM_WORLD_SIZE",
)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


@gin.configurable
def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Any = None,
    cpu_collectives: str | None = None,
) -> bool:
    """Starts jax.distributed when this is a multi-process job; returns whether it did.

    Call before anything touches devices. cpu_collectives: "gloo" for CPU multi-process runs.
    """
    if jax.distributed.is_initialized():
        return True
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    explicit = coordinator_address is not None
    auto = any(os.environ.get(name) for name in _AUTO_ENV)
    if not explicit and not auto:
        return False
    if explicit and (num_processes or 1) == 1:
        return False
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if explicit:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            local_device_ids=local_device_ids,
        )
    else:
        try:
            jax.distributed.initialize()
        except (RuntimeError, ValueError) as e:  # e.g. a single-task SLURM allocation
            logging.info(
                "jax.distributed auto-detection did not start (%s); running single-process.", e
            )
            return False
    logging.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def allgather_json(value: Any) -> list[Any]:
    """Every process's JSON-able `value`, in process order (a collective: all must call it)."""
    if jax.process_count() == 1:
        return [value]
    from jax.experimental import multihost_utils  # noqa: PLC0415

    blob = np.frombuffer(json.dumps(value).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.asarray([blob.size], np.int64))
    padded = np.zeros(int(np.max(sizes)), np.uint8)
    padded[: blob.size] = blob
    blobs = np.asarray(multihost_utils.process_allgather(padded)).reshape(jax.process_count(), -1)
    sizes = np.asarray(sizes).reshape(-1)
    return [json.loads(bytes(b[:n]).decode()) for b, n in zip(blobs, sizes)]


def process_batch_shard(sharding: jax.sharding.Sharding) -> tuple[int, int]:
    """(shard_index, shard_count) of this process's rows of a batch sharded by `sharding`.

    Each process must own one contiguous block of rows, block p of P in process order, so a data
    pipeline can hand process p its p-th slice of the global batch.
    """
    count = jax.process_count()
    if count == 1:
        return 0, 1
    rows = sharding.mesh.shape["data"] * sharding.mesh.shape["fsdp"] * count
    owned = set()
    for device, index in sharding.devices_indices_map((rows,)).items():
        if device.process_index == jax.process_index():
            owned.update(range(*index[0].indices(rows)))
    if len(owned) == rows:  # batch replicated across processes: each feeds the whole batch
        return 0, 1
    block = rows // count
    start = min(owned)
    if sorted(owned) != list(range(start, start + block)) or start % block:
        raise ValueError(
            f"process {jax.process_index()} owns batch rows {sorted(owned)} of {rows}, not "
            "one contiguous block; order the mesh devices by process (the default)."
        )
    return start // block, count
