"""Cloud TPU launcher: create a TPU VM / pod slice (or a multislice queued resource), install the
project on every worker, run a gin experiment on all workers at once, stream logs, delete.

    python -m launch.tpu create  --spec launch/specs/small_world_v4_8.py [--dry-run]
    python -m launch.tpu install --spec ...   # clone (or scp) REF, uv venv, pip install -e .[data] jax[tpu]
    python -m launch.tpu run     --spec ...   # audiolm-jax train on every worker, tee'd there and here
    python -m launch.tpu logs    --spec ... [--worker=0]
    python -m launch.tpu delete  --spec ...
    (any action) --spec.FIELD=VALUE overrides a spec field, e.g. --spec.tpu.zone=us-central2-b

Every action is a bash script built from argv lists; --dry-run prints it and runs nothing (no
gcloud needed), otherwise the same text runs under `bash -c`. JAX finds the pod's hosts by itself
(jax.distributed.initialize() on a TPU VM), and a multislice queued resource sets the MEGASCALE_*
variables on its workers, so the run step sets only the spec's own env.
"""
from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import ml_collections

from launch import shell
from launch.accelerators import parse_tpu_type
from launch.spec import (SpecError, env_pairs, experiment_argv, load_spec, missing_gin_files,
                         validate_tpu_job)

ACTIONS = ("create", "install", "run", "logs", "delete")
VENV = ".venv"  # inside the workdir on each worker
REPO_ROOT = Path(__file__).resolve().parent.parent
# Queued-resource states after which waiting for ACTIVE is pointless.
_QR_DEAD_STATES = ("FAILED", "SUSPENDING", "SUSPENDED")


def _multislice(config: ml_collections.ConfigDict) -> bool:
    return config.tpu.num_slices > 1


def _gcloud(config: ml_collections.ConfigDict, verb: str) -> list[str]:
    """`gcloud compute tpus tpu-vm VERB` (one slice) or `... queued-resources VERB` (multislice)."""
    group = "queued-resources" if _multislice(config) else "tpu-vm"
    return ["gcloud", "compute", "tpus", group, verb]


def _where(config: ml_collections.ConfigDict) -> list[str]:
    return [f"--zone={config.tpu.zone}"] + ([f"--project={config.tpu.project}"] if config.tpu.project else [])


def _targets(config: ml_collections.ConfigDict, worker: str) -> list[str]:
    """Which hosts an ssh/scp reaches. Multislice: every node too, and all at once -- with the
    default batches of 64, a >64-host job would start in waves and never rendezvous."""
    flags = [f"--worker={worker}"]
    if _multislice(config):
        flags += ["--node=all", "--batch-size=all"] if worker == "all" else ["--node=0"]
    return flags


def _log_file(config: ml_collections.ConfigDict) -> str:
    return config.run.log_file or f"logs/{config.name}.log"


def _local_log(config: ml_collections.ConfigDict) -> str:
    return f"{config.run.local_log_dir}/{config.name}.log"


def _ssh(config: ml_collections.ConfigDict, lines: Sequence[str], worker: str = "all",
         tee: str | None = None, what: str = "") -> shell.Step:
    argv = (_gcloud(config, "ssh") + [config.name] + _where(config) + _targets(config, worker)
            + ["--command=" + shell.remote_command(lines)])
    where = "every worker" if worker == "all" else f"worker {worker}"
    readable = "\n".join(f"  {line}" for line in lines)
    return shell.step(*argv, tee=tee, comment=f"{what} on {where}:\n{readable}")


def create_steps(config: ml_collections.ConfigDict) -> list:
    tpu = config.tpu
    runtime = tpu.runtime_version or parse_tpu_type(tpu.accelerator_type).default_runtime
    capacity = {"on-demand": [], "spot": ["--spot"], "preemptible": ["--preemptible"],
                "reserved": ["--reserved"]}[tpu.capacity]
    extra = [str(f) for f in tpu.extra_create_flags]
    if not _multislice(config):
        argv = (_gcloud(config, "create") + [config.name] + _where(config)
                + [f"--accelerator-type={tpu.accelerator_type}", f"--version={runtime}"]
                + capacity + extra)
        return [shell.step(*argv, comment="create the TPU VM (returns when it is READY)")]
    argv = (_gcloud(config, "create") + [config.name] + _where(config)
            + [f"--accelerator-type={tpu.accelerator_type}", f"--runtime-version={runtime}",
               f"--node-count={tpu.num_slices}", f"--node-prefix={config.name}"]
            + capacity + extra)
    describe = shlex.join(_gcloud(config, "describe") + [config.name] + _where(config)
                          + ["--format=value(state.state)"])
    gave_up = shlex.quote(f"queued resource {config.name} will not become ACTIVE: ")
    wait = "\n".join([
        "while true; do",
        f"  state=$({describe})",
        f'  echo {shlex.quote(f"queued resource {config.name}: ")}"$state"',
        '  case "$state" in',
        "    ACTIVE) break ;;",
        f"    {'|'.join(_QR_DEAD_STATES)}) echo {gave_up}\"$state\" >&2; exit 1 ;;",
        "  esac",
        "  sleep 60",
        "done",
    ])
    return [shell.step(*argv, comment=f"request {tpu.num_slices} slices as one queued resource"),
            shell.Raw(wait, comment="wait until every slice is provisioned")]


def fetch_source(config: ml_collections.ConfigDict) -> tuple[list, list[str]]:
    """(local steps, worker lines) that put the tree at source.ref into the workdir."""
    src, wd = config.source, config.source.workdir
    if src.method == "git":
        clone = shlex.join(["git", "clone", src.repo_url, wd])
        return [], [
            f"if [ ! -d {shlex.quote(wd + '/.git')} ]; then {clone}; fi",
            shlex.join(["git", "-C", wd, "remote", "set-url", "origin", src.repo_url]),
            shlex.join(["git", "-C", wd, "fetch", "origin", src.ref]),
            shlex.join(["git", "-C", wd, "checkout", "--force", "--detach", "FETCH_HEAD"]),
        ]
    tarball = f"{config.name}-src.tar.gz"
    local_tarball = f"{config.run.local_log_dir}/{tarball}"
    local = [
        shell.step("mkdir", "-p", config.run.local_log_dir),
        shell.step("git", "archive", "--format=tar.gz", f"--output={local_tarball}", src.ref,
                   comment=f"the committed tree at {src.ref} (run from the repository root)"),
        shell.step(*_gcloud(config, "scp"), local_tarball, f"{config.name}:{tarball}",
                   *_where(config), *_targets(config, "all"), comment="copy it to every worker"),
    ]
    # Replace the tree but keep the venv and the logs of earlier runs.
    return local, [
        shlex.join(["mkdir", "-p", wd]),
        shlex.join(["find", wd, "-mindepth", "1", "-maxdepth", "1", "-not", "-name", VENV,
                    "-not", "-name", "logs", "-exec", "rm", "-rf", "{}", "+"]),
        shlex.join(["tar", "-xzf", tarball, "-C", wd]),
        shlex.join(["rm", "-f", tarball]),
    ]


def install_steps(config: ml_collections.ConfigDict) -> list:
    inst = config.install
    local, lines = fetch_source(config)
    extras = f".[{inst.extras}]" if inst.extras else "."
    lines += [
        shlex.join(["cd", config.source.workdir]),
        # PIP_BREAK_SYSTEM_PACKAGES: newer images mark the system python externally managed.
        shlex.join(["env", "PIP_BREAK_SYSTEM_PACKAGES=1", "python3", "-m", "pip", "install",
                    "--user", "--upgrade", "uv"]),
        shlex.join(["python3", "-m", "uv", "venv", "--allow-existing", "--python", inst.python, VENV]),
        shlex.join(["python3", "-m", "uv", "pip", "install", "--python", f"{VENV}/bin/python",
                    "-e", extras, *[str(p) for p in inst.packages]]),
        shlex.join([f"{VENV}/bin/python", "-c", "import audiolm_jax, jax; print(jax.__version__)"]),
    ]
    return local + [_ssh(config, lines, what=f"install {config.source.ref}")]


def train_argv(config: ml_collections.ConfigDict) -> list[str]:
    """The worker's training argv: `env NAME=VALUE ... .venv/bin/audiolm-jax train ...`."""
    env = [f"{k}={v}" for k, v in env_pairs(config.experiment.env)]
    program = experiment_argv(config.experiment, f"{VENV}/bin/audiolm-jax")
    return (["env", *env] if env else []) + program


def run_steps(config: ml_collections.ConfigDict) -> list:
    log = _log_file(config)
    lines = [shlex.join(["cd", config.source.workdir]),
             shlex.join(["mkdir", "-p", str(Path(log).parent)])]
    if config.run.detach:
        lines += [shlex.join(["nohup", "setsid", *train_argv(config)])
                  + " >> " + shlex.quote(log) + " 2>&1 < /dev/null &",
                  shlex.join(["echo", f"started in the background; log: ~/{config.source.workdir}/{log}"])]
        return [_ssh(config, lines, what="start training in the background")]
    lines.append(shlex.join(train_argv(config)) + " 2>&1 | tee -a " + shlex.quote(log))
    return [shell.step("mkdir", "-p", config.run.local_log_dir),
            _ssh(config, lines, tee=_local_log(config), what="train (all hosts start together)")]


def logs_steps(config: ml_collections.ConfigDict, worker: str = "all") -> list:
    log = f"{config.source.workdir}/{_log_file(config)}"
    return [_ssh(config, [shlex.join(["tail", "-n", "200", "-F", log])], worker=worker,
                 what="follow the training log (Ctrl-C stops following, not training)")]


def delete_steps(config: ml_collections.ConfigDict) -> list:
    force = ["--force"] if _multislice(config) else []  # also delete the queued resource's nodes
    argv = _gcloud(config, "delete") + [config.name] + _where(config) + force + ["--quiet"]
    return [shell.step(*argv, comment="delete (stops billing)")]


def steps(config: ml_collections.ConfigDict, action: str, worker: str = "all") -> list:
    if action == "logs":
        return logs_steps(config, worker)
    builders = {"create": create_steps, "install": install_steps, "run": run_steps,
                "delete": delete_steps}
    if action not in builders:
        raise ValueError(f"unknown action {action!r}; use one of {ACTIONS}")
    return builders[action](config)


def script(config: ml_collections.ConfigDict, action: str, spec_path: str, worker: str = "all") -> str:
    """The bash script of one action, with a header saying what it drives."""
    tpu = parse_tpu_type(config.tpu.accelerator_type)
    slices = config.tpu.num_slices
    header = [
        f"audiolm-jax on Cloud TPU: {action} {config.name} (spec {spec_path})",
        f"{tpu.name} x {slices} slice(s): {tpu.hosts} host(s) per slice, "
        f"{tpu.hosts * slices} JAX process(es); zone {config.tpu.zone}, {config.tpu.capacity}",
        "Run from the repository root.",
    ]
    return shell.bash_script(steps(config, action, worker), header)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m launch.tpu", allow_abbrev=False,
        description="Cloud TPU launcher for audiolm-jax experiments (see launch/README.md).",
        epilog="Override spec fields with --spec.FIELD=VALUE, e.g. --spec.tpu.zone=us-central2-b.")
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("--spec", required=True, help="job spec file, e.g. launch/specs/small_world_v4_8.py")
    parser.add_argument("--dry-run", action="store_true", help="print the commands; run nothing")
    parser.add_argument("--worker", default="all", help="logs: 'all' (default), or a worker index like 0")
    args, overrides = parser.parse_known_args(argv)
    if not re.fullmatch(r"all|[0-9]+([-,][0-9]+)*", args.worker):
        parser.error(f"--worker={args.worker!r}: use 'all', an index (0) or a list/range (0,2 or 0-3)")
    try:
        config = load_spec(args.spec, overrides)
        validate_tpu_job(config, args.spec)
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.action == "run":
        for name in missing_gin_files(config.experiment.gin_files, REPO_ROOT):
            print(f"warning: gin file {name!r} is not in this checkout ({REPO_ROOT}/gin); "
                  f"the workers run {config.source.ref}", file=sys.stderr)
    text = script(config, args.action, args.spec, args.worker)
    if args.dry_run:
        print(text)
        return 0
    if shutil.which("gcloud") is None:
        print("error: gcloud is not on PATH; install the Google Cloud CLI "
              "(https://cloud.google.com/sdk/docs/install) or pass --dry-run", file=sys.stderr)
        return 2
    return subprocess.run(["bash", "-c", text], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
