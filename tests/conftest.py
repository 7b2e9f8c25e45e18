"""Test-wide setup, before JAX initialises: CPU, 8 simulated devices, fast XLA compiles.

`--xla_backend_optimization_level=0` roughly halves XLA:CPU compile time, which dominates these
tiny-config tests; it changes no semantics (f32 results stay within the tests' tolerances and
every comparison runs both sides under the same flags). Subprocesses inherit the environment.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


import pytest  # noqa: E402


@pytest.fixture
def shard_map_calls(monkeypatch):
    """The `in_specs[0]` of every `jax.shard_map` call made during the test, in order (how the
    Pallas attention paths are checked to run inside shard_map under a mesh)."""
    import jax
    calls, real = [], jax.shard_map

    def spy(*args, **kwargs):
        calls.append(kwargs["in_specs"][0])
        return real(*args, **kwargs)

    monkeypatch.setattr(jax, "shard_map", spy)
    return calls
