"""launch/: generated TPU and SLURM commands, their quoting, spec validation, shellcheck.

Nothing here calls the real gcloud, sbatch or srun: dry runs print, and the end-to-end tests put
fake `gcloud` / `scontrol` / `srun` first on PATH that execute what they are handed locally.
"""
from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # launch/ is a repository tool, not an installed package;
    sys.path.insert(0, str(REPO))  # `python -m pytest` adds the root itself, plain `pytest` not.

from launch import slurm, tpu  # noqa: E402
from launch.accelerators import parse_tpu_type  # noqa: E402
from launch.shell import Step, bash_script  # noqa: E402
from launch.spec import (SpecError, load_spec, missing_gin_files, validate_slurm_job,  # noqa: E402
                         validate_tpu_job)

SPECS = REPO / "launch" / "specs"
SMALL = str(SPECS / "small_world_v4_8.py")
POD = str(SPECS / "paper_semantic_v4_128.py")
MULTI = str(SPECS / "paper_semantic_2x_v4_128.py")
GPU = str(SPECS / "paper_semantic_gpu_2x8.py")
TPU_SPECS = [SMALL, POD, MULTI]

# Values a shell would mangle if anything were concatenated unquoted.
NASTY_BINDINGS = [
    "MODEL_DIR='gs://bucket/run 1'",
    'train.note="it\'s (a) \\"test\\""',
    "train.cmd='$(touch PWNED) `touch PWNED2` ; echo; & | > <'",
    "train.glob='*.gin [abc] ~ {x,y}'",
]
NASTY_ENV = {"MY_FLAGS": "--a 'b c' \"d\" $(touch PWNED3)", "PLAIN": "1"}


def write_spec(tmp_path: Path, body: str, name: str = "spec.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def nasty_tpu_spec(tmp_path: Path, num_slices: int = 1, detach: bool = False) -> str:
    return write_spec(tmp_path, f"""
        from launch import spec

        def get_config():
            config = spec.tpu_job()
            config.name = "aj-quoting"
            config.tpu.zone = "us-central2-b"
            config.tpu.accelerator_type = "v4-16"
            config.tpu.num_slices = {num_slices}
            config.run.detach = {detach}
            config.experiment.gin_files = ["experiments/with space.gin", "models/tiny.gin"]
            config.experiment.gin_bindings = {NASTY_BINDINGS!r}
            config.experiment.extra_args = ["--note=a b"]
            config.experiment.env = {NASTY_ENV!r}
            return config
        """, name=f"nasty_{num_slices}_{detach}.py")


def expected_train_argv() -> list[str]:
    return (["train", "--gin_file=experiments/with space.gin", "--gin_file=models/tiny.gin"]
            + [f"--gin.{b}" for b in NASTY_BINDINGS] + ["--note=a b"])


def loaded(path: str, *overrides: str, kind: str = "tpu"):
    config = load_spec(path, overrides)
    (validate_tpu_job if kind == "tpu" else validate_slurm_job)(config, path)
    return config


def ssh_steps(steps) -> list[Step]:
    return [s for s in steps if isinstance(s, Step) and "ssh" in s.argv]


def remote_script(step: Step) -> str:
    commands = [a for a in step.argv if a.startswith("--command=")]
    assert len(commands) == 1, step.argv
    return commands[0][len("--command="):]


def bash_argv(rendered: str) -> list[str]:
    """What bash passes to a program for this rendered command line."""
    out = subprocess.run(["bash", "-c", 'printf "%s\\0" ' + rendered], check=True,
                         capture_output=True).stdout.decode()
    return out.split("\0")[:-1]


def fake_program(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# ---------------------------------------------------------------- accelerators and specs

def test_tpu_types_know_hosts_and_runtimes():
    assert parse_tpu_type("v4-8").hosts == 1
    assert parse_tpu_type("v4-128").hosts == 16
    assert parse_tpu_type("v5p-256").hosts == 32
    assert parse_tpu_type("v5litepod-8").hosts == 1
    assert parse_tpu_type("v5litepod-256").hosts == 64
    assert parse_tpu_type("v6e-16").hosts == 4
    assert parse_tpu_type("v4-128").default_runtime == "tpu-ubuntu2204-base"
    assert parse_tpu_type("v5litepod-16").default_runtime == "v2-alpha-tpuv5-lite"


@pytest.mark.parametrize("bad, words", [
    ("v9-8", ["unknown TPU generation 'v9'", "v5litepod-N"]),
    ("v5e-8", ["unknown TPU generation 'v5e'", "spelled 'v5litepod-N'"]),
    ("v4-12", ["multiples of 8"]),
    ("v5litepod-3", ["(1, 4, 8, 16"]),
    ("tpu-v4", ["not GENERATION-SIZE"]),
])
def test_unknown_accelerator_types_are_named(bad, words):
    with pytest.raises(ValueError) as info:
        parse_tpu_type(bad)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("path", TPU_SPECS)
def test_example_tpu_specs_validate(path):
    config = loaded(path)
    assert config.experiment.command == "train" and config.experiment.gin_files


def test_example_slurm_spec_validates():
    config = loaded(GPU, kind="slurm")
    assert (config.slurm.nodes, config.slurm.gpus_per_node) == (2, 8)


def test_unknown_accelerator_and_missing_zone_are_reported_together(tmp_path):
    config = load_spec(SMALL, ["--spec.tpu.zone=", "--spec.tpu.accelerator_type=v9-8"])
    with pytest.raises(SpecError) as info:
        validate_tpu_job(config, SMALL)
    message = str(info.value)
    assert SMALL in message and "2 problem(s)" in message
    assert "tpu.zone is empty" in message and "us-central2-b" in message
    assert "tpu.accelerator_type" in message and "'v9-8'" in message


@pytest.mark.parametrize("override, words", [
    ("--spec.tpu.zone=uscentral", ["tpu.zone='uscentral'", "us-central2-b"]),
    ("--spec.name=Bad_Name", ["name='Bad_Name'", "lowercase"]),
    ("--spec.source.workdir=../x", ["source.workdir='../x'", "relative"]),
    ("--spec.source.workdir=~/x", ["source.workdir='~/x'", "'~'"]),
    ("--spec.source.method=git", ["source.repo_url is empty"]),
    ("--spec.tpu.capacity=cheap", ["tpu.capacity='cheap'", "spot"]),
    ("--spec.tpu.num_slices=0", ["tpu.num_slices=0"]),
    ("--spec.install.python=py3", ["install.python='py3'"]),
    ("--spec.experiment.command=", ["experiment.command=''"]),
])
def test_tpu_spec_errors_name_field_value_and_fix(override, words):
    config = load_spec(SMALL, [override])
    with pytest.raises(SpecError) as info:
        validate_tpu_job(config, SMALL)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_preemptible_multislice_and_bad_bindings_are_rejected(tmp_path):
    path = write_spec(tmp_path, """
        from launch import spec
        def get_config():
            config = spec.tpu_job()
            config.name = "aj-x"
            config.tpu.zone = "us-central2-b"
            config.tpu.accelerator_type = "v4-8"
            config.tpu.num_slices = 2
            config.tpu.capacity = "preemptible"
            config.experiment.gin_bindings = ["no_equals_sign", "=1", "x="]
            config.experiment.env = {"BAD NAME": "1"}
            return config
        """)
    with pytest.raises(SpecError) as info:
        validate_tpu_job(load_spec(path), path)
    message = str(info.value)
    assert "queued resources (multislice) take 'spot'" in message
    assert "experiment.gin_files is empty" in message
    for bad in ("'no_equals_sign'", "'=1'", "'x='", "'BAD NAME'"):
        assert bad in message


def test_spec_of_the_wrong_kind_says_which_launcher(tmp_path):
    with pytest.raises(SpecError, match="python -m launch.slurm"):
        validate_tpu_job(load_spec(GPU), GPU)
    with pytest.raises(SpecError, match="python -m launch.tpu"):
        validate_slurm_job(load_spec(SMALL), SMALL)


@pytest.mark.parametrize("override, words", [
    ("--spec.slurm.workdir=relative/path", ["slurm.workdir='relative/path'", "absolute"]),
    ("--spec.slurm.partition=gpu a100", ["slurm.partition='gpu a100'", "#SBATCH"]),
    ("--spec.slurm.time=tomorrow", ["slurm.time='tomorrow'", "24:00:00"]),
    ("--spec.slurm.process_per=socket", ["slurm.process_per='socket'"]),
    ("--spec.slurm.nodes=0", ["slurm.nodes=0"]),
    ("--spec.slurm.coordinator_port=80", ["slurm.coordinator_port=80"]),
])
def test_slurm_spec_errors(override, words):
    config = load_spec(GPU, [override])
    with pytest.raises(SpecError) as info:
        validate_slurm_job(config, GPU)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_load_spec_errors_name_the_file(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.py")
    with pytest.raises(SpecError, match="no such field 'zon'"):
        load_spec(SMALL, ["--spec.tpu.zon=us-central2-b"])
    with pytest.raises(SpecError, match="--spec.FIELD=VALUE"):
        load_spec(SMALL, ["--zone=x"])
    broken = write_spec(tmp_path, "def get_config():\n    raise RuntimeError('boom')\n")
    with pytest.raises(SpecError, match="boom") as info:
        load_spec(broken)
    assert broken in str(info.value)


def test_missing_gin_files_resolve_like_the_cli(tmp_path):
    (tmp_path / "gin" / "experiments").mkdir(parents=True)
    (tmp_path / "gin" / "experiments" / "a.gin").write_text("")
    names = ["experiments/a", "experiments/a.gin", "gin/experiments/a.gin", "experiments/b.gin"]
    assert missing_gin_files(names, tmp_path) == ["experiments/b.gin"]



@pytest.mark.parametrize("path", TPU_SPECS + [GPU])
def test_every_example_spec_names_gin_that_parses_with_its_bindings(path):
    """The shipped specs must start a real experiment: files exist and bindings apply."""
    import gin

    from audiolm_jax import config as gin_flags

    job = load_spec(path).experiment
    assert missing_gin_files(list(job.gin_files), REPO) == []
    gin.clear_config()
    try:
        gin_flags.parse_gin(list(job.gin_files), list(job.gin_bindings), finalize=False)
        assert gin.query_parameter("train.workdir")
    finally:
        gin.clear_config()

# ---------------------------------------------------------------- TPU commands

def test_create_single_slice_command():
    (create,) = tpu.steps(loaded(SMALL), "create")
    assert list(create.argv) == [
        "gcloud", "compute", "tpus", "tpu-vm", "create", "aj-small-world-semantic",
        "--zone=us-central2-b", "--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base", "--spot"]


def test_create_multislice_queued_resource_and_waits_for_active():
    config = loaded(MULTI, "--spec.tpu.project=my-proj", "--spec.tpu.runtime_version=v2-alpha-tpuv4")
    create, wait = tpu.steps(config, "create")
    assert list(create.argv) == [
        "gcloud", "compute", "tpus", "queued-resources", "create", "aj-paper-semantic-2x-v4-128",
        "--zone=us-central2-b", "--project=my-proj", "--accelerator-type=v4-128",
        "--runtime-version=v2-alpha-tpuv4", "--node-count=2",
        "--node-prefix=aj-paper-semantic-2x-v4-128"]
    text = wait.render()
    assert ("gcloud compute tpus queued-resources describe aj-paper-semantic-2x-v4-128 "
            "--zone=us-central2-b --project=my-proj '--format=value(state.state)'") in text
    assert "ACTIVE) break" in text and "FAILED|SUSPENDING|SUSPENDED)" in text


def test_wait_loop_stops_on_active_and_fails_on_failed(tmp_path):
    """Run the generated wait loop against a fake gcloud that reports a sequence of states."""
    config = loaded(MULTI)
    wait = tpu.steps(config, "create")[1].render().replace("sleep 60", "sleep 0")
    for states, rc in ((["WAITING_FOR_RESOURCES", "PROVISIONING", "ACTIVE"], 0), (["FAILED"], 1)):
        (tmp_path / "states").write_text("\n".join(states) + "\n")
        fake_program(tmp_path / "bin" / "gcloud", f"""
            head -n 1 {tmp_path}/states; sed -i 1d {tmp_path}/states
            """)
        env = dict(os.environ, PATH=f"{tmp_path}/bin:{os.environ['PATH']}")
        result = subprocess.run(["bash", "-c", "set -euo pipefail\n" + wait], env=env,
                                capture_output=True, text=True)
        assert result.returncode == rc, result.stderr
        assert f"queued resource aj-paper-semantic-2x-v4-128: {states[-1]}" in result.stdout
        if rc:
            assert "will not become ACTIVE: FAILED" in result.stderr


def test_install_by_scp_copies_git_archive_to_every_worker():
    mkdir, archive, scp, ssh = tpu.steps(loaded(POD), "install")
    assert list(archive.argv) == ["git", "archive", "--format=tar.gz",
                                  "--output=outputs/launch/aj-paper-semantic-v4-128-src.tar.gz", "HEAD"]
    assert list(scp.argv) == [
        "gcloud", "compute", "tpus", "tpu-vm", "scp",
        "outputs/launch/aj-paper-semantic-v4-128-src.tar.gz",
        "aj-paper-semantic-v4-128:aj-paper-semantic-v4-128-src.tar.gz",
        "--zone=us-central2-b", "--worker=all"]
    assert ssh.argv[:8] == ("gcloud", "compute", "tpus", "tpu-vm", "ssh",
                            "aj-paper-semantic-v4-128", "--zone=us-central2-b", "--worker=all")
    lines = remote_script(ssh).splitlines()
    assert lines[0] == "set -euo pipefail"
    assert "tar -xzf aj-paper-semantic-v4-128-src.tar.gz -C audiolm-jax" in lines
    install = [shlex.split(line) for line in lines if "uv pip install" in line]
    assert install == [["python3", "-m", "uv", "pip", "install", "--python", ".venv/bin/python",
                        "-e", ".[data]", "jax[tpu]==0.10.2"]]
    assert "python3 -m uv venv --allow-existing --python 3.11 .venv" in lines


def test_install_by_git_clones_ref_on_every_node_of_a_multislice():
    config = loaded(MULTI, "--spec.source.method=git",
                    "--spec.source.repo_url=https://example.org/my repo.git",
                    "--spec.source.ref=v1.0")
    (ssh,) = tpu.steps(config, "install")
    assert "--worker=all" in ssh.argv and "--node=all" in ssh.argv
    assert ssh.argv[3] == "queued-resources"
    lines = remote_script(ssh).splitlines()
    assert "git clone 'https://example.org/my repo.git' audiolm-jax" in lines[1]
    assert shlex.split(lines[3]) == ["git", "-C", "audiolm-jax", "fetch", "origin", "v1.0"]
    assert shlex.split(lines[4]) == ["git", "-C", "audiolm-jax", "checkout", "--force",
                                     "--detach", "FETCH_HEAD"]


@pytest.mark.parametrize("path, group, targets", [
    (POD, "tpu-vm", ["--worker=all"]),
    (MULTI, "queued-resources", ["--worker=all", "--node=all", "--batch-size=all"]),
])
def test_run_streams_every_worker_and_tees_both_ends(path, group, targets):
    config = loaded(path)
    mkdir, ssh = tpu.steps(config, "run")
    assert list(mkdir.argv) == ["mkdir", "-p", "outputs/launch"]
    n = len(targets)
    assert list(ssh.argv[:7 + n]) == ["gcloud", "compute", "tpus", group, "ssh", config.name,
                                      "--zone=us-central2-b", *targets]
    assert ssh.tee == f"outputs/launch/{config.name}.log"
    assert ssh.render().endswith(f" 2>&1 | tee -a outputs/launch/{config.name}.log")
    *_, train = remote_script(ssh).splitlines()
    assert shlex.split(train) == (tpu.train_argv(config)
                                  + ["2>&1", "|", "tee", "-a", f"logs/{config.name}.log"])
    assert tpu.train_argv(config)[:2] == [".venv/bin/audiolm-jax", "train"]


def test_logs_and_delete_commands():
    (logs,) = tpu.steps(loaded(MULTI), "logs", worker="0")
    assert "--worker=0" in logs.argv and "--node=0" in logs.argv
    assert remote_script(logs).splitlines()[1] == (
        "tail -n 200 -F audiolm-jax/logs/aj-paper-semantic-2x-v4-128.log")
    (single,) = tpu.steps(loaded(SMALL), "delete")
    assert list(single.argv) == ["gcloud", "compute", "tpus", "tpu-vm", "delete",
                                 "aj-small-world-semantic", "--zone=us-central2-b", "--quiet"]
    (multi,) = tpu.steps(loaded(MULTI), "delete")
    assert list(multi.argv[3:5]) == ["queued-resources", "delete"]
    assert list(multi.argv[-2:]) == ["--force", "--quiet"]


def test_detached_run_returns_and_leaves_training_running(tmp_path):
    config = loaded(nasty_tpu_spec(tmp_path, detach=True))
    (ssh,) = tpu.steps(config, "run")
    assert ssh.tee is None
    start = remote_script(ssh).splitlines()[3]
    assert start.startswith("nohup setsid env ") and start.endswith(
        " >> logs/aj-quoting.log 2>&1 < /dev/null &")


# ---------------------------------------------------------------- quoting

def test_rendered_steps_round_trip_through_shlex_and_bash(tmp_path):
    for detach in (False, True):
        config = loaded(nasty_tpu_spec(tmp_path, num_slices=2, detach=detach))
        for action in tpu.ACTIONS:
            for s in tpu.steps(config, action):
                if not isinstance(s, Step):
                    continue
                rendered = Step(s.argv).render()  # without the tee
                assert shlex.split(rendered) == list(s.argv)
                assert bash_argv(rendered) == list(s.argv)
    # One level down: the worker's shell sees exactly the training argv.
    config = loaded(nasty_tpu_spec(tmp_path))
    (_, ssh) = tpu.steps(config, "run")
    command = bash_argv(Step(ssh.argv).render())[-1]
    train_line = command.removeprefix("--command=").splitlines()[-1]
    program = train_line.removesuffix(" 2>&1 | tee -a logs/aj-quoting.log")
    assert bash_argv(program) == tpu.train_argv(config)
    assert tpu.train_argv(config)[-len(expected_train_argv()):] == expected_train_argv()


@pytest.mark.parametrize("num_slices", [1, 2])
def test_run_end_to_end_through_a_fake_gcloud(tmp_path, monkeypatch, num_slices):
    """`python -m launch.tpu run` (no dry run) with a fake gcloud that executes --command in a
    fake worker home: the trainer receives every gin value intact and nothing is evaluated."""
    spec_path = nasty_tpu_spec(tmp_path, num_slices=num_slices)
    worker = tmp_path / "worker"
    fake_program(worker / "audiolm-jax" / ".venv" / "bin" / "audiolm-jax", """
        printf 'env MY_FLAGS=<%s> PLAIN=<%s>\\n' "$MY_FLAGS" "$PLAIN"
        printf '<%s>\\n' "$@"
        """)
    fake_program(tmp_path / "bin" / "gcloud", f"""
        echo "$3 $4" >> {tmp_path}/gcloud_calls
        for arg in "$@"; do case "$arg" in --command=*) command="${{arg#--command=}}";; esac; done
        cd {worker} && exec bash -c "$command"
        """)
    monkeypatch.setenv("PATH", f"{tmp_path}/bin:{os.environ['PATH']}")
    local = tmp_path / "local"
    local.mkdir()
    monkeypatch.chdir(local)
    assert tpu.main(["run", "--spec", spec_path]) == 0
    expected = ([f"env MY_FLAGS=<{NASTY_ENV['MY_FLAGS']}> PLAIN=<1>"]
                + [f"<{a}>" for a in expected_train_argv()])
    worker_log = (worker / "audiolm-jax" / "logs" / "aj-quoting.log").read_text().splitlines()
    local_log = (local / "outputs" / "launch" / "aj-quoting.log").read_text().splitlines()
    assert worker_log == expected and local_log == expected
    assert not list(tmp_path.rglob("PWNED*")), "a value was evaluated by a shell"
    group = "queued-resources" if num_slices > 1 else "tpu-vm"
    assert (tmp_path / "gcloud_calls").read_text().splitlines() == [f"{group} ssh"]


def test_dry_run_prints_what_main_would_run_and_never_calls_gcloud(tmp_path, monkeypatch, capsys):
    fake_program(tmp_path / "bin" / "gcloud", f"touch {tmp_path}/CALLED\n")
    monkeypatch.setenv("PATH", f"{tmp_path}/bin:/usr/bin:/bin")
    for action in tpu.ACTIONS:
        assert tpu.main([action, "--spec", MULTI, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert out.strip() == tpu.script(loaded(MULTI), action, MULTI).strip()
    assert not (tmp_path / "CALLED").exists()
    assert tpu.main(["create", "--spec", SMALL, "--dry-run", "--spec.name=aj-other"]) == 0
    assert "tpu-vm create aj-other " in capsys.readouterr().out
    assert tpu.main(["create", "--spec", SMALL, "--dry-run", "--spec.tpu.zone="]) == 2
    assert "tpu.zone is empty" in capsys.readouterr().err


# ---------------------------------------------------------------- SLURM

def test_sbatch_directives_and_environment():
    text = slurm.sbatch_script(loaded(GPU, kind="slurm"), GPU)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    for directive in ("--job-name=aj-paper-semantic-gpu-2x8", "--nodes=2", "--ntasks-per-node=8",
                      "--gpus-per-node=8", "--cpus-per-task=12", "--time=2-00:00:00",
                      "--partition=gpu", "--exclusive", "--chdir=/shared/audiolm-jax",
                      "--output=logs/%x-%j.out"):
        assert f"#SBATCH {directive}" in lines
    assert "export JAX_NUM_PROCESSES=16" in lines and "export NCCL_NVLS_ENABLE=0" in lines
    assert "export JAX_COORDINATOR_PORT=$((SLURM_JOB_ID % 4096 + 61440))" in lines
    srun = shlex.split(lines[-1])
    assert srun[:6] == ["srun", "--nodes=2", "--ntasks=16", "--ntasks-per-node=8",
                        "--kill-on-bad-exit=1", "--gpu-bind=none"]
    assert srun[srun.index("audiolm-jax-task") + 1:] == [
        ".venv/bin/audiolm-jax", "train", "--gin_file=experiments/stage_semantic_speech_paper.gin",
        "--gin.train.workdir='/shared/runs/paper/semantic gpu-2x8'"]
    assert slurm.submit_commands(loaded(GPU, kind="slurm")) == [
        ["mkdir", "-p", "/shared/audiolm-jax/logs"],
        ["sbatch", "outputs/launch/aj-paper-semantic-gpu-2x8.sbatch"]]


@pytest.mark.parametrize("process_per, tasks", [("gpu", 16), ("node", 2)])
def test_sbatch_script_runs_with_fake_slurm(tmp_path, process_per, tasks):
    """Execute the script with fake scontrol/srun: every task sees the rendezvous variables
    jax.distributed needs and the exact training argv."""
    config = loaded(GPU, f"--spec.slurm.process_per={process_per}",
                    "--spec.experiment.env={'MY_FLAGS': \"--a 'b c'\"}", kind="slurm")
    config.experiment.gin_bindings = NASTY_BINDINGS
    script = tmp_path / "job.sbatch"
    script.write_text(slurm.sbatch_script(config))
    work = tmp_path / "work"
    fake_program(work / ".venv" / "bin" / "audiolm-jax", """
        echo "$JAX_PROCESS_ID $JAX_NUM_PROCESSES $JAX_COORDINATOR_ADDRESS $JAX_LOCAL_DEVICE_IDS $NCCL_NVLS_ENABLE <$MY_FLAGS>"
        printf '<%s>\\n' "$@"
        """)
    fake_program(tmp_path / "bin" / "scontrol", 'printf "gpu007\\ngpu008\\n"\n')
    # srun: skip its options, run the rest once per task with that task's SLURM ids.
    fake_program(tmp_path / "bin" / "srun", """
        per_node=1
        while [[ "$1" == --* ]]; do
          case "$1" in --ntasks=*) n="${1#--ntasks=}";; --ntasks-per-node=*) per_node="${1#--ntasks-per-node=}";; esac
          shift
        done
        for ((i = 0; i < n; i++)); do
          SLURM_PROCID=$i SLURM_LOCALID=$((i % per_node)) "$@" > "task$i.out"
        done
        """)
    env = dict(os.environ, PATH=f"{tmp_path}/bin:{os.environ['PATH']}", SLURM_JOB_ID="1234",
               SLURM_JOB_NODELIST="gpu[007-008]")
    subprocess.run(["bash", str(script)], cwd=work, env=env, check=True)
    for i in range(tasks):
        first, *argv = (work / f"task{i}.out").read_text().splitlines()
        local = str(i % 8) if process_per == "gpu" else "0,1,2,3,4,5,6,7"
        assert first == f"{i} {tasks} gpu007:{1234 % 4096 + 61440} {local} 0 <--a 'b c'>"
        assert argv == [f"<{a}>" for a in [
            "train", "--gin_file=experiments/stage_semantic_speech_paper.gin",
            *[f"--gin.{b}" for b in NASTY_BINDINGS]]]
    assert not list(tmp_path.rglob("PWNED*"))


def test_fixed_coordinator_port_and_dry_run_cli(capsys):
    config = loaded(GPU, "--spec.slurm.coordinator_port=23456", kind="slurm")
    assert "export JAX_COORDINATOR_PORT=23456" in slurm.sbatch_script(config).splitlines()
    assert slurm.main(["--spec", GPU, "--dry-run", "--spec.slurm.nodes=4"]) == 0
    captured = capsys.readouterr()
    assert "#SBATCH --nodes=4" in captured.out and "export JAX_NUM_PROCESSES=32" in captured.out
    assert "sbatch outputs/launch/aj-paper-semantic-gpu-2x8.sbatch" in captured.err
    assert slurm.main(["--spec", GPU, "--dry-run", "--spec.slurm.time=soon"]) == 2
    assert "slurm.time='soon'" in capsys.readouterr().err


# ---------------------------------------------------------------- shellcheck

def generated_scripts(tmp_path) -> dict[str, str]:
    """Every script the launchers generate, local and remote (remote ones get a bash shebang)."""
    scripts = {}
    tpu_specs = TPU_SPECS + [nasty_tpu_spec(tmp_path, 2), nasty_tpu_spec(tmp_path, 1, detach=True)]
    for path in tpu_specs:
        for overrides in ([], ["--spec.source.method=git", "--spec.source.repo_url=https://x/y.git"]):
            config = loaded(path, *overrides)
            for action in tpu.ACTIONS:
                key = f"{Path(path).stem}{'-git' if overrides else ''}-{action}"
                scripts[key] = tpu.script(config, action, path)
                for i, s in enumerate(ssh_steps(tpu.steps(config, action))):
                    scripts[f"{key}-remote{i}"] = "#!/bin/bash\n" + remote_script(s)
    for process_per in ("gpu", "node"):
        config = loaded(GPU, f"--spec.slurm.process_per={process_per}", kind="slurm")
        config.experiment.gin_bindings = NASTY_BINDINGS
        scripts[f"slurm-{process_per}"] = slurm.sbatch_script(config, GPU)
    return scripts


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_passes_on_every_generated_script(tmp_path):
    scripts = generated_scripts(tmp_path)
    assert len(scripts) > 40
    folder = tmp_path / "scripts"
    folder.mkdir()
    for name, text in scripts.items():
        (folder / f"{name}.sh").write_text(text)
    examples = sorted(str(p) for p in folder.iterdir() if not p.name.startswith("nasty"))
    nasty = sorted(str(p) for p in folder.iterdir() if p.name.startswith("nasty"))
    # SC2016 ("expressions don't expand in single quotes") flags the nasty specs' literal
    # `$(touch PWNED)`: keeping it literal is the point; every other check applies.
    for files, exclude in ((examples, []), (nasty, ["--exclude=SC2016"])):
        result = subprocess.run(["shellcheck", "--severity=style", *exclude, *files],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


# ---------------------------------------------------------------- install: getting the tree

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": "/dev/null"}


def commit(repo: Path, text: str) -> None:
    (repo / "file.txt").write_text(text)
    subprocess.run(["git", "add", "file.txt"], cwd=repo, check=True, env={**os.environ, **GIT_ENV})
    subprocess.run(["git", "commit", "-q", "-m", text], cwd=repo, check=True,
                   env={**os.environ, **GIT_ENV})


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("method", ["git", "scp"])
def test_source_lines_fetch_the_ref_and_update_on_rerun(tmp_path, monkeypatch, method):
    """The install step's source lines, run against a local repository (twice: the second run
    must move the worker's tree to the new commit and keep the venv)."""
    repo = tmp_path / "repo with space"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True,
                   env={**os.environ, **GIT_ENV})
    worker = tmp_path / "worker"
    worker.mkdir()
    fake_program(tmp_path / "bin" / "gcloud", f'cp "$5" {worker}/"${{6#*:}}"\n')  # scp SRC NAME:DEST
    monkeypatch.setenv("PATH", f"{tmp_path}/bin:{os.environ['PATH']}")
    monkeypatch.chdir(repo)
    config = loaded(SMALL, f"--spec.source.method={method}", f"--spec.source.repo_url={repo}",
                    "--spec.source.ref=main", f"--spec.run.local_log_dir={tmp_path}/out")
    for text in ("first", "second"):
        commit(repo, text)
        local, lines = tpu.fetch_source(config)
        env = {**os.environ, **GIT_ENV}
        subprocess.run(["bash", "-c", bash_script(local)], check=True, env=env)
        subprocess.run(["bash", "-c", "\n".join(["set -euo pipefail", *lines])], cwd=worker,
                       check=True, env=env)
        assert (worker / "audiolm-jax" / "file.txt").read_text() == text
        (worker / "audiolm-jax" / ".venv").mkdir(exist_ok=True)
    assert (worker / "audiolm-jax" / ".venv").is_dir()
