"""benchmarks/scaling.py: mesh lists, the CPU smoke of the weak-scaling run, and (with libtpu)
ahead-of-time compilation for a TPU v4 topology."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import scaling  # noqa: E402


def test_meshes_cover_data_fsdp_and_mixed():
    assert scaling.meshes_for(1) == [(1, 1, 1)]
    assert scaling.meshes_for(2) == [(2, 1, 1), (1, 2, 1), (1, 1, 2)]
    assert scaling.meshes_for(8) == [(8, 1, 1), (1, 8, 1), (4, 2, 1), (4, 1, 2), (2, 2, 2)]


def run_scaling(tmp_path, *args):
    out = tmp_path / "scaling.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
               XLA_FLAGS="--xla_force_host_platform_device_count=8 "
                         "--xla_backend_optimization_level=0")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "scaling.py"),
                           "--tiny", "--out", str(out), *args],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.timeout(120)
def test_tiny_weak_scaling_smoke_on_simulated_cpu_devices(tmp_path):
    result = run_scaling(tmp_path, "--counts", "1,4", "--steps", "2")
    assert set(result["tokens_per_s"]) == {"1", "4"}
    assert result["efficiency"]["1"] == pytest.approx(1.0)
    assert result["efficiency"]["4"] == pytest.approx(
        result["tokens_per_s"]["4"] / (4 * result["tokens_per_s"]["1"]))
    meshes = [r["mesh"] for r in result["runs"] if r["devices"] == 4]
    assert meshes == ["data=4,fsdp=1,tensor=1", "data=1,fsdp=4,tensor=1",
                      "data=2,fsdp=2,tensor=1", "data=2,fsdp=1,tensor=2",
                      "data=1,fsdp=2,tensor=2"]
    assert all("tokens_per_s" in r for r in result["runs"]), result["runs"]
    assert result["best_mesh"]["4"] in meshes
    assert all(r["batch"] == 2 * r["devices"] for r in result["runs"])  # weak scaling
    assert result["measure"]["devices_on_machine"] == 8


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu is not installed (pip install -e '.[tpu-aot]')")
@pytest.mark.timeout(600)
def test_tiny_tpu_aot_for_a_v4_slice(tmp_path):
    result = run_scaling(tmp_path, "--tpu-aot", "v4:2x2x1", "--aot-meshes", "4x1x1")
    (row,) = result["tpu_aot"]["runs"]
    assert row.get("devices") == 4 and row.get("device_kind") == "TPU v4", row
    assert row["fits"] is True and row["peak_bytes_per_device"] > 0
    assert row["flops_per_device"] > 0
