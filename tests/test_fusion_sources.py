"""benchmarks/fusion_sources.py: a kernel name of a profile traced back to the JAX operations."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = """
import jax, jax.numpy as jnp
def f(x, w):
    return jnp.sum(jnp.tanh(x @ w) * 2.0, axis=-1)
jax.jit(f)(jnp.ones((1, 64)), jnp.ones((64, 32)))
"""


def test_names_the_operations_of_a_fusion_from_an_hlo_dump(tmp_path):
    dump = tmp_path / "dump"
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_dump_to={dump} --xla_dump_hlo_as_text"}
    subprocess.run([sys.executable, "-c", PROGRAM], env=env, check=True, timeout=120)
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import fusion_sources

    module = next(p for p in os.listdir(dump) if "jit_f" in p and
                  p.endswith("after_optimizations.txt"))
    text = (dump / module).read_text()
    # The fusion that ends in the reduction: whatever XLA names it, its body is tanh, mul, sum.
    name = next(line.split("%")[1].split(" ")[0] for line in text.splitlines()
                if "fusion(" in line and "reduce_sum" in line)
    lines = fusion_sources.describe(text, name)
    assert lines[0].startswith(f"{name}: f32[1]")
    body = "\n".join(lines[1:])
    for op in ("tanh", "multiply", "reduce"):
        assert op in body, lines
    assert "jit(f)/reduce_sum" in body and "jit(f)/tanh" in body
    assert fusion_sources.describe(text, "no_such_fusion") == []
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "fusion_sources.py"),
                          str(dump), name, "no_such_fusion"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert "jit(f)/tanh" in out and "== no_such_fusion: in no module" in out
