"""Every gin file of the repository parses (includes, imports and bindings resolve)."""
from pathlib import Path

import gin
import pytest

from audiolm_jax import config

GIN_FILES = sorted(str(p.relative_to(config.GIN_DIR)) for p in config.GIN_DIR.rglob("*.gin"))


def test_there_are_experiments_models_and_runs():
    tops = {Path(f).parts[0] for f in GIN_FILES}
    assert {"experiments", "models", "runs", "training"} <= tops


@pytest.mark.parametrize("name", GIN_FILES)
def test_gin_file_parses(name):
    gin.clear_config()
    try:
        config.parse_gin([name], [], finalize=False)
    finally:
        gin.clear_config()
