"""CLI and gin-flag parsing (T5X style)."""
import subprocess
import sys

import gin
import pytest

from audiolm_jax import cli, config


def test_split_gin_flags_all_forms():
    files, bindings, rest = config.split_gin_flags([
        "train", "--gin_file=a.gin", "--gin_file", "b.gin", "--gin.train.num_steps=5",
        "--gin.MODEL_DIR", "'/tmp/run 1'", "--other", "x"])
    assert files == ["a.gin", "b.gin"]
    assert bindings == ["train.num_steps = 5", "MODEL_DIR = '/tmp/run 1'"]
    assert rest == ["train", "--other", "x"]


@pytest.mark.parametrize("argv", [["--gin_file"], ["--gin.x"], ["--gin.=3"]])
def test_split_gin_flags_errors_say_how(argv):
    with pytest.raises(ValueError, match="--gin"):
        config.split_gin_flags(argv)


def test_parse_gin_files_then_overrides(tmp_path):
    @gin.configurable("cli_test_fn")
    def fn(a=0, b="x"):
        return a, b

    cfg = tmp_path / "exp.gin"
    cfg.write_text("cli_test_fn.a = 1\ncli_test_fn.b = 'file'\n")
    try:
        config.parse_gin([str(cfg)], ["cli_test_fn.a = 7"], finalize=False)
        assert fn() == (7, "file")  # the override wins over the file
        out = config.save_operative_config(tmp_path / "run")
        assert out.exists()
    finally:
        gin.clear_config()


def test_missing_gin_file_names_where_it_looked():
    with pytest.raises(FileNotFoundError, match="no_such_experiment"):
        config.resolve_gin_file("no_such_experiment")


def test_gin_flags_refused_where_not_taken():
    with pytest.raises(SystemExit, match="takes no gin flags"):
        cli.main(["corpus", "speech", "--out", "/tmp/x", "--gin.a=1"])


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "audiolm_jax.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for command in ("corpus", "train", "demo"):
        assert command in out
