"""Disk full during a checkpoint save: the run stops with an error naming the checkpoint, what is
intact and the fix; the previous checkpoint restores and a rerun (with space freed) resumes from it.

Two ways to fill the disk: a real 4 MB tmpfs (needs root and mount; skipped otherwise) under the
trainer, and a failing writer (monkeypatch) under the Checkpointer, which runs everywhere.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import jax
from audiolm_jax.training.checkpoint import CheckpointConfig, Checkpointer, CheckpointSaveError
from audiolm_jax.training.mesh import MeshConfig, make_mesh
from audiolm_jax.training.partitioning import axis_rules
from audiolm_jax.training.program import build_program, seed_rng
from audiolm_jax.training.step import StepOptions
from audiolm_jax.training.trainer import train
from tiny_models import make_lm_objective, token_data


def tiny_program():
    return build_program(make_lm_objective(), make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1]),
                         axis_rules(), StepOptions(compute_dtype=jnp.float32), 100)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs mounted at tmp_path / "disk"."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root; the failing-writer test covers this case")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory) -> str:
    """Write a ballast file taking every free byte of `directory`'s filesystem."""
    path = os.path.join(directory, "ballast")
    stat = os.statvfs(directory)
    with open(path, "wb") as f:
        try:
            f.write(b"\0" * (stat.f_bavail * stat.f_frsize))
        except OSError:
            pass
    return path


@pytest.mark.parametrize("async_save", [True, False])
def test_the_trainer_stops_clearly_when_the_disk_fills_and_resumes_after(small_disk, async_save):
    workdir = small_disk / "run"
    ballast = []

    def on_step(step, metrics):
        if step == 3:
            deadline = time.monotonic() + 60  # an async step-2 save may still be committing
            while not (workdir / "checkpoints" / "2").is_dir() and time.monotonic() < deadline:
                time.sleep(0.01)
            ballast.append(fill(small_disk))

    kwargs = dict(objective=make_lm_objective(), train_data=token_data(8), workdir=str(workdir),
                  mesh_config=MeshConfig(1, 1, 1), devices=jax.devices()[:1],
                  compute_dtype="float32", progress=lambda _: None, log_every=100,
                  checkpoint=CheckpointConfig(every_steps=2, keep=3, async_save=async_save))
    with pytest.raises(CheckpointSaveError) as caught:
        train(num_train_steps=6, on_step=on_step, **kwargs)
    message = str(caught.value)
    assert "No space left on device" in message and "checkpoints [2] are intact" in message
    assert "resumes from step 2" in message and "Fix: free space" in message
    assert "checkpoints/4 failed" in message

    with Checkpointer(workdir / "checkpoints", read_only=True) as ckpt:
        assert ckpt.steps() == [2]
        assert ckpt.restore(tiny_program().abstract_state).step == 2
    os.remove(ballast[0])
    result = train(num_train_steps=6, **kwargs)
    assert result.step == 6
    assert Checkpointer(workdir / "checkpoints", read_only=True).steps() == [2, 4, 6]


def test_a_failing_writer_leaves_the_previous_checkpoint_restorable(tmp_path, monkeypatch):
    prog = tiny_program()
    state = prog.init(seed_rng(0))
    with Checkpointer(tmp_path, CheckpointConfig(async_save=False)) as ckpt:
        ckpt.save(1, state)
        real_save = ocp.CheckpointManager.save

        def full_disk(self, step, *args, **kwargs):
            os.makedirs(os.path.join(self.directory, f"{step}.orbax-checkpoint-tmp-0", "model"))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
        with pytest.raises(CheckpointSaveError, match=r"/2 failed \(OSError: \[Errno 28\] No space "
                                                      r"left on device\).*\[1\] are intact"):
            ckpt.save(2, state)
        monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.steps() == [1]
        restored = ckpt.restore(prog.abstract_state)
    assert restored.step == 1
    np.testing.assert_array_equal(restored.state.params["out"]["kernel"],
                                  state.params["out"]["kernel"])
