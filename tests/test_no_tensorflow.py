"""`audiolm_jax` never imports TensorFlow: every module of the library, imported in a fresh
process, leaves tensorflow, tensorflow_datasets and seqio out of sys.modules (TF lives in tasks/)."""
import subprocess
import sys

CODE = """
import importlib, pkgutil, sys
import audiolm_jax
names = [m.name for m in pkgutil.walk_packages(audiolm_jax.__path__, 'audiolm_jax.')]
for name in names:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets', 'seqio'))
assert not bad, bad[:5]
print(len(names))
"""


def test_no_module_of_the_library_imports_tensorflow():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) > 50  # really walked the package
