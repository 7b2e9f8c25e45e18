"""Fault injection in the trainers: kill -9 and SIGTERM at random steps, rerun, exact resume.

Shared by tests/reliability/test_trainer_faults.py and benchmarks/reliability.py. A trial runs
`fault_worker.py` (the codec, w2v-BERT or stage-LM trainer from its gin config) and, for each
fault in turn, waits until the run has finished a randomly drawn step, then kills it (SIGKILL) or
asks it to stop (SIGTERM); then reruns it to the end. It passes when
  * every rerun resumes right after the newest checkpoint committed before the fault (kill -9
    loses at most the steps since that checkpoint; SIGTERM loses none: it saves where it stops),
  * the final model variables equal an uninterrupted run's (bitwise; `max_abs_diff` reported).
"""
from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "fault_worker.py"
FAULTS = ("kill", "term")
RUN_TIMEOUT_S = 600.0
# The worker sleeps this long after each step, so a fault lands inside a known step window.
STEP_SLEEP_S = 0.25
TOLERANCE = 1e-6


def worker_env(cache_dir: Path) -> dict:
    """One CPU device at XLA backend optimisation level 0, and a compilation cache shared by the
    runs of one trainer, so only the first compiles. Level 0 compiles the codec's programs in
    ~35 s instead of ~68 s and runs its GAN steps ~4x slower; for 8 steps that is the cheaper
    trial (codec: one cold and three warm runs in ~113 s instead of ~131 s on 2 cores)."""
    env = dict(os.environ)
    env.update(JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1 "
                         "--xla_backend_optimization_level=0",
               JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    return env


@dataclasses.dataclass
class Run:
    proc: subprocess.Popen
    step_file: Path
    log_file: Path

    def steps(self) -> list[int]:
        if not self.step_file.exists():
            return []
        return [int(line) for line in self.step_file.read_text().split()]

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def wait(self, timeout: float = RUN_TIMEOUT_S) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"worker timed out; log tail:\n{self.log()[-2000:]}") from None


def start(trainer: str, workdir: Path, corpus: Path, tag: str, cache_dir: Path, steps: int,
          save_every: int, step_sleep: float = 0.0, params_out: Path | None = None) -> Run:
    step_file = workdir.parent / f"{workdir.name}.{tag}.steps"
    log_file = workdir.parent / f"{workdir.name}.{tag}.log"
    args = [sys.executable, str(WORKER), "--trainer", trainer, "--workdir", str(workdir),
            "--corpus", str(corpus), "--steps", str(steps), "--save_every", str(save_every),
            "--step_file", str(step_file), "--step_sleep", str(step_sleep)]
    if params_out is not None:
        args += ["--params_out", str(params_out)]
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(args, env=worker_env(cache_dir), cwd=str(ROOT), stdout=log,
                                stderr=subprocess.STDOUT)
    return Run(proc, step_file, log_file)


def committed_steps(workdir: Path) -> list[int]:
    """Checkpoint steps Orbax committed (temporary directories of unfinished saves excluded)."""
    root = workdir / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []


def load_variables(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Largest |a - b| over every variable; inf if the names or shapes differ."""
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    diffs = [np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)), initial=0.0)
             for k in a if a[k].dtype.kind in "fiub"]
    return float(max(diffs, default=0.0))


def reference_run(trainer: str, root: Path, corpus: Path, cache_dir: Path, steps: int,
                  save_every: int) -> dict[str, np.ndarray]:
    """The uninterrupted run's final variables."""
    out = root / "reference.npz"
    run = start(trainer, root / "reference", corpus, "0", cache_dir, steps, save_every, params_out=out)
    code = run.wait()
    assert code == 0 and out.exists(), f"reference {trainer} run failed ({code}):\n{run.log()[-3000:]}"
    assert run.steps() == list(range(1, steps + 1)), run.steps()
    return load_variables(out)


def _wait_for_step(run: Run, step: int, timeout: float = RUN_TIMEOUT_S) -> bool:
    """True once `run` finished `step`; False if it exited first."""
    deadline = time.monotonic() + timeout
    while not run.steps() or run.steps()[-1] < step:
        if run.proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            run.proc.kill()
            raise AssertionError(f"no step {step} in {timeout} s; log:\n{run.log()[-2000:]}")
        time.sleep(0.02)
    return True


@dataclasses.dataclass
class FaultRecord:
    fault: str                  # "kill" or "term"
    at_step: int                # the step the fault was injected after (-1: not injected)
    committed: int              # newest committed checkpoint after the fault (0: none)
    resumed_at: int             # first step the next run trained (committed + 1 when nothing lost)
    steps_lost: int             # steps done before the fault that had to be redone

    @property
    def injected(self) -> bool:
        return self.at_step >= 0


@dataclasses.dataclass
class TrialResult:
    trainer: str
    faults: list[FaultRecord]
    exact: bool                 # final variables bitwise equal to the reference
    max_abs_diff: float
    data_lost: int              # faults after which a committed checkpoint was not resumed from,
                                # or (SIGTERM) the stopped run's steps were not all saved

    @property
    def resumed_exactly(self) -> bool:
        return self.max_abs_diff <= TOLERANCE and self.data_lost == 0

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["resumed_exactly"] = self.resumed_exactly
        return out


def fault_trial(trainer: str, root: Path, corpus: Path, cache_dir: Path,
                reference: dict[str, np.ndarray], faults: list[str], rng: random.Random,
                steps: int, save_every: int) -> TrialResult:
    """Injects `faults` one after another into one run in `root`, then runs it to the end."""
    workdir, records, data_lost = root / "run", [], 0
    out = root / "final.npz"
    for i, fault in enumerate(faults):
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; use one of {FAULTS}")
        before = committed_steps(workdir)
        start_step = before[-1] if before else 0
        run = start(trainer, workdir, corpus, f"{i}{fault}", cache_dir, steps, save_every,
                    step_sleep=STEP_SLEEP_S, params_out=out)
        target = rng.randint(start_step + 1, steps - 1)
        injected = _wait_for_step(run, target)
        if injected:
            run.proc.send_signal(signal.SIGKILL if fault == "kill" else signal.SIGTERM)
        code = run.wait()
        done = run.steps()
        resumed_at = done[0] if done else start_step + 1
        if resumed_at != start_step + 1:
            data_lost += 1
        after = committed_steps(workdir)
        committed = after[-1] if after else 0
        if fault == "term" and injected:
            # Exit 0, and the checkpoint is where the run stopped: nothing done is lost.
            if code != 0 or "preempted=True" not in run.log() or committed != done[-1]:
                data_lost += 1
        records.append(FaultRecord(fault, target if injected else -1, committed, resumed_at,
                                   (done[-1] - committed) if done else 0))
        if out.exists():  # the fault came too late: the run finished
            break
    if not out.exists():
        before = committed_steps(workdir)
        run = start(trainer, workdir, corpus, "final", cache_dir, steps, save_every, params_out=out)
        code = run.wait()
        assert code == 0 and out.exists(), f"{trainer} rerun failed ({code}):\n{run.log()[-3000:]}"
        done = run.steps()
        expected_start = (before[-1] if before else 0) + 1
        if (done[0] if done else steps + 1) != expected_start:
            data_lost += 1
    final = load_variables(out)
    diff = max_abs_diff(final, reference)
    return TrialResult(trainer, records, diff == 0.0, diff, data_lost)
