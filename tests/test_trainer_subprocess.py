"""The trainer as a subprocess: kill -9 and resume, SIGTERM and resume (bitwise the same loss
curve on CPU), and two jax.distributed processes agreeing on the loss (gloo collectives).

The worker is `tests/tiny_models.py`; it appends `step loss.hex()` per step to a file."""

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audiolm_jax.training.checkpoint import load_params

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "tiny_models.py"


def worker_env(cache_dir: Path, devices: int = 8) -> dict:
    """CPU devices for the child, and a compilation cache shared by the children of one test."""
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_COMPILATION_CACHE_DIR=str(cache_dir),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return env


def start(workdir: Path, loss_file: Path, env: dict, *args: str) -> subprocess.Popen:
    log = open(f"{loss_file}.log", "a")
    return subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            "--workdir",
            str(workdir),
            "--loss_file",
            str(loss_file),
            *args,
        ],
        env=env,
        cwd=str(ROOT),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def losses(path: Path) -> dict[int, str]:
    """{step: loss as float.hex()} -- exact bits."""
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        step, value = line.split()
        out[int(step)] = value
    return out


def wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def finish(proc: subprocess.Popen, timeout: float, loss_file: Path) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(
            f"worker timed out; log: {Path(f'{loss_file}.log').read_text()[-2000:]}"
        )


def checkpoint_steps(workdir: Path) -> list[int]:
    """Committed checkpoint steps (temporary directories of unfinished saves excluded)."""
    root = workdir / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STEPS, SAVE_EVERY = "12", "3"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("xla_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    """The uninterrupted run's losses, step 1..12 (constant learning rate: a shorter run's
    losses are a prefix of these)."""
    root = tmp_path_factory.mktemp("reference")
    proc = start(
        root / "run", root / "loss", worker_env(cache), "--steps", STEPS, "--save_every", SAVE_EVERY
    )
    assert finish(proc, 240, root / "loss") == 0
    out = losses(root / "loss")
    assert sorted(out) == list(range(1, 13))
    return out


def _resume_and_compare(root: Path, env: dict, reference: dict, after: int) -> None:
    """Restarts the run in `root`; its losses must be the reference's, bit for bit."""
    resumed = root / "loss_resumed"
    proc = start(root / "run", resumed, env, "--steps", STEPS, "--save_every", SAVE_EVERY)
    assert finish(proc, 240, resumed) == 0
    out = losses(resumed)
    assert sorted(out) == list(range(after + 1, 13)), f"resumed at {min(out)}, expected {after + 1}"
    assert out == {step: reference[step] for step in out}


def test_kill_9_at_a_random_step_then_resume_gives_the_same_curve(tmp_path, cache, reference):
    env = worker_env(cache)
    kill_at = random.Random(2024).randint(5, 10)
    proc = start(
        tmp_path / "run",
        tmp_path / "loss",
        env,
        "--steps",
        STEPS,
        "--save_every",
        SAVE_EVERY,
        "--step_sleep",
        "0.15",
    )
    wait_for(
        lambda: len(losses(tmp_path / "loss")) >= kill_at and checkpoint_steps(tmp_path / "run"),
        proc,
        240,
        f"step {kill_at} and a first checkpoint",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    before = losses(tmp_path / "loss")
    assert before == {step: reference[step] for step in before}
    committed = checkpoint_steps(tmp_path / "run")
    assert committed and max(committed) <= max(before)
    _resume_and_compare(tmp_path, env, reference, after=max(committed))


def test_sigterm_saves_at_the_next_step_exits_0_and_resumes(tmp_path, cache, reference):
    env = worker_env(cache)
    proc = start(
        tmp_path / "run",
        tmp_path / "loss",
        env,
        "--steps",
        STEPS,
        "--save_every",
        "100",
        "--step_sleep",
        "0.15",
    )
    wait_for(lambda: len(losses(tmp_path / "loss")) >= 4, proc, 240, "step 4")
    proc.send_signal(signal.SIGTERM)
    assert finish(proc, 120, tmp_path / "loss") == 0
    before = losses(tmp_path / "loss")
    last = max(before)
    assert last < 12 and "preempted=True" in Path(f"{tmp_path / 'loss'}.log").read_text()
    assert checkpoint_steps(tmp_path / "run") == [last]  # saved exactly where it stopped
    _resume_and_compare(tmp_path, env, reference, after=last)


def test_two_processes_train_together_and_agree_on_the_loss(tmp_path, cache, reference):
    port = free_port()
    env = worker_env(cache, devices=4)  # 2 processes x 4 CPU devices = the (2, 2, 2) mesh
    procs = [
        start(
            tmp_path / "run",
            tmp_path / f"loss{i}",
            env,
            "--steps",
            "6",
            "--save_every",
            "3",
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num_processes",
            "2",
            "--process_id",
            str(i),
        )
        for i in range(2)
    ]
    codes = [finish(p, 300, tmp_path / f"loss{i}") for i, p in enumerate(procs)]
    assert codes == [0, 0], [
        Path(f"{tmp_path / f'loss{i}'}.log").read_text()[-1500:] for i in range(2)
    ]
    first, second = losses(tmp_path / "loss0"), losses(tmp_path / "loss1")
    assert sorted(first) == list(range(1, 7)) and first == second

    # Same losses as one process over the same 8-device mesh (gloo reduces in another order).
    np.testing.assert_allclose(
        [float.fromhex(first[s]) for s in range(1, 7)],
        [float.fromhex(reference[s]) for s in range(1, 7)],
        rtol=1e-5,
    )
    # The checkpoint the two processes wrote together reads back in one process.
    params = load_params(tmp_path / "run" / "checkpoints")
    assert params["out"]["kernel"].shape == (16, 32)
