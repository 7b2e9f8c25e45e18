"""Job specs: ml_collections ConfigDicts that say what to run and where.

A spec file defines `get_config()` and starts from `tpu_job()` or `slurm_job()`, so every field
exists (and can be overridden on the command line as `--spec.FIELD=VALUE`):

    from launch import spec

    def get_config():
        config = spec.tpu_job()
        config.name = "aj-semantic"
        config.tpu.zone = "us-central2-b"
        config.experiment.gin_files = ["experiments/speech_semantic.gin"]
        config.experiment.gin_bindings = ["MODEL_DIR='gs://bucket/run 1'"]
        return config

`experiment` is shared by both launchers: it becomes the argv
`audiolm-jax COMMAND --gin_file=F ... --gin.NAME=VALUE ... EXTRA_ARGS`, never a shell string.
Validation collects every problem and names the spec file, the field, the bad value and the fix.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from launch.accelerators import parse_tpu_type

CAPACITIES = ("on-demand", "spot", "preemptible", "reserved")
SOURCE_METHODS = ("git", "scp")
PROCESS_PER = ("gpu", "node")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_./]*")
_TPU_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_ZONE = re.compile(r"[a-z]+-[a-z]+[0-9]+-[a-z]")
_SLURM_TIME = re.compile(r"[0-9]+-[0-9]+(:[0-9]+){0,2}|[0-9]+(:[0-9]+){0,2}")
_NO_SPACE = re.compile(r"\S+")


class SpecError(ValueError):
    """A spec that cannot be launched; the message lists every problem with its fix."""


def experiment_defaults() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "command": "train",      # the audiolm-jax subcommand
        "gin_files": [],         # paths, or names under gin/ (".gin" optional)
        "gin_bindings": [],      # "NAME=VALUE", VALUE in gin syntax: "MODEL_DIR='gs://b/run 1'"
        "extra_args": [],        # appended verbatim as argv elements
        "env": {},               # NAME -> value, set for the training process only
    })


def tpu_job() -> ml_collections.ConfigDict:
    """Defaults of a Cloud TPU job; a spec file fills name, zone, accelerator and experiment."""
    return ml_collections.ConfigDict({
        "name": "",  # TPU VM / queued-resource name: lowercase letters, digits, hyphens
        "experiment": experiment_defaults(),
        "tpu": {
            "project": "",            # empty: gcloud's configured project
            "zone": "",
            "accelerator_type": "",   # v4-8, v4-128, v5p-256, v5litepod-256, v6e-64, ...
            "runtime_version": "",    # empty: the generation's default (accelerators.py)
            "num_slices": 1,          # > 1: multislice through a queued resource
            "capacity": "on-demand",  # on-demand | spot | preemptible | reserved
            "extra_create_flags": [],  # e.g. ["--network=my-net", "--internal-ips"]
        },
        "source": {
            "method": "scp",          # scp: ship `git archive REF` from here; git: clone repo_url on each worker
            "repo_url": "",
            "ref": "HEAD",            # branch, tag or commit
            "workdir": "audiolm-jax",  # on each worker, relative to the home directory
        },
        "install": {
            "python": "3.11",         # uv provides it; the TPU images ship an older python3
            "extras": "data",         # pip extras of audiolm-jax
            "packages": ["jax[tpu]==0.10.2"],
        },
        "run": {
            "log_file": "",           # on each worker, relative to workdir; empty: logs/NAME.log
            "local_log_dir": "outputs/launch",  # where `run` tees the streamed output here
            "detach": False,          # True: start in the background; follow with `logs`
        },
    })


def slurm_job() -> ml_collections.ConfigDict:
    """Defaults of a SLURM GPU job; a spec file fills name, workdir and the experiment."""
    return ml_collections.ConfigDict({
        "name": "",
        "experiment": experiment_defaults(),
        "slurm": {
            "nodes": 1,
            "gpus_per_node": 8,
            "process_per": "gpu",     # gpu: one task per GPU (JAX's SLURM default); node: one per host
            "cpus_per_task": 0,       # 0: leave to the cluster default
            "time": "24:00:00",
            "partition": "",
            "account": "",
            "exclusive": True,
            "extra_sbatch": [],       # e.g. ["--qos=high", "--constraint=h100"]
            "workdir": "",            # absolute path of the checkout on the shared filesystem
            "venv": ".venv",          # relative to workdir, or absolute
            "coordinator_port": 0,    # 0: derived from the job id, as JAX's own SLURM detection does
            "output": "logs/%x-%j.out",  # relative to workdir
            "script_path": "",        # where the sbatch script is written; empty: outputs/launch/NAME.sbatch
        },
    })


def load_spec(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Runs `get_config()` of the spec file, then applies `--spec.FIELD=VALUE` overrides."""
    path = str(path)
    if not Path(path).is_file():
        raise SpecError(f"spec file {path!r} not found; pass --spec launch/specs/NAME.py")
    bad = [o for o in overrides if not o.startswith("--spec.") or "=" not in o]
    if bad:
        raise SpecError(f"{path}: overrides must read --spec.FIELD=VALUE, got {bad}")
    argv = ["launch", f"--spec={path}", *overrides]
    flag_values = flags.FlagValues()  # private: no global absl state
    config_flags.DEFINE_config_file("spec", None, "job spec", flag_values=flag_values,
                                    lock_config=True, sys_argv=argv)
    try:
        flag_values(argv)
        config = flag_values.spec
        config.to_dict()  # surfaces a deferred error from get_config()
    except (KeyError, AttributeError) as error:
        if not overrides:  # raised inside get_config() itself
            raise SpecError(f"{path}: cannot load spec: {error!r}") from error
        while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError(..))
            error = error.args[0]
        detail = str(error.args[0] if error.args else error).replace("\n", "; ")
        raise SpecError(f"{path}: no such field {detail} (overrides {list(overrides)}); an "
                        "override changes a field the spec already has (see launch/spec.py)") from error
    except Exception as error:  # absl and ml_collections raise many types; say which file
        raise SpecError(f"{path}: cannot load spec: {error}") from error
    return config


def experiment_argv(experiment: ml_collections.ConfigDict, executable: str) -> list[str]:
    """[executable, command, --gin_file=F..., --gin.NAME=VALUE..., extra...]: one element per arg."""
    return ([executable, experiment.command]
            + [f"--gin_file={f}" for f in experiment.gin_files]
            + [f"--gin.{b}" for b in experiment.gin_bindings]
            + [str(a) for a in experiment.extra_args])


def env_pairs(env: ml_collections.ConfigDict | dict) -> list[tuple[str, str]]:
    """The spec's env as sorted (NAME, value) pairs, so generated commands are deterministic."""
    items = env.items() if hasattr(env, "items") else []
    return sorted((str(k), str(v)) for k, v in items)


def missing_gin_files(gin_files: Iterable[str], repo_root: str | os.PathLike) -> list[str]:
    """Gin files found neither as a path nor under REPO/gin/ (with or without .gin), as the CLI
    resolves them; a launcher warns before a pod is paid for."""
    root = Path(repo_root)
    missing = []
    for name in gin_files:
        candidates = [root / name, root / "gin" / name, root / "gin" / f"{name}.gin"]
        if not any(c.is_file() for c in candidates):
            missing.append(name)
    return missing


def _safe_relative(path: str) -> bool:
    parts = Path(path).parts
    return bool(path) and not path.startswith(("/", "~")) and ".." not in parts and path not in (".", "")


def _check_experiment(experiment, problems: list[str]) -> None:
    if not experiment.command or not _NO_SPACE.fullmatch(str(experiment.command)):
        problems.append(f"experiment.command={experiment.command!r}: set an audiolm-jax subcommand, e.g. 'train'")
    if not experiment.gin_files:
        problems.append("experiment.gin_files is empty: list at least one, "
                        "e.g. ['experiments/small_world_semantic.gin']")
    for f in experiment.gin_files:
        if not isinstance(f, str) or not f:
            problems.append(f"experiment.gin_files has {f!r}: each entry is a path or a name under gin/")
    for b in experiment.gin_bindings:
        name, sep, value = str(b).partition("=")
        if not sep or not _GIN_NAME.fullmatch(name.strip()) or not value.strip():
            problems.append(f"experiment.gin_bindings has {b!r}: write 'NAME=VALUE', "
                            "e.g. \"MODEL_DIR='gs://bucket/run'\" or 'train.num_steps=1000'")
    for name, value in (experiment.env.items() if hasattr(experiment.env, "items") else []):
        if not _ENV_NAME.fullmatch(str(name)) or not isinstance(value, (str, int, float)):
            problems.append(f"experiment.env[{name!r}]={value!r}: names are shell identifiers, "
                            "values strings")


def _missing_fields(config, template: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Fields of the template that the spec lacks (a spec not built from tpu_job()/slurm_job())."""
    missing = []
    for key, value in template.items():
        if not hasattr(config, "keys") or key not in config.keys():
            missing.append(prefix + key)
        elif isinstance(value, ml_collections.ConfigDict) and key != "env":
            missing += _missing_fields(config[key], value, f"{prefix}{key}.")
    return missing


def _check_shape(config, template: ml_collections.ConfigDict, builder: str, path: str) -> None:
    missing = _missing_fields(config, template)
    if missing:
        other = {"tpu_job": ("slurm", "launch.slurm"), "slurm_job": ("tpu", "launch.tpu")}[builder]
        hint = (f" (it has a '{other[0]}' section: launch it with python -m {other[1]})"
                if hasattr(config, "keys") and other[0] in config.keys() else "")
        raise SpecError(f"spec {path}: missing field(s) {missing}{hint}; start get_config() from "
                        f"launch.spec.{builder}() so every field exists")


def _raise(path: str, problems: list[str]) -> None:
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise SpecError(f"spec {path}: {len(problems)} problem(s):\n{lines}")


def validate_tpu_job(config: ml_collections.ConfigDict, path: str = "<spec>") -> None:
    """Raises SpecError listing every problem of a TPU job spec."""
    _check_shape(config, tpu_job(), "tpu_job", path)
    problems: list[str] = []
    if not _TPU_NAME.fullmatch(str(config.name)):
        problems.append(f"name={config.name!r}: a TPU name is 1-63 lowercase letters, digits or "
                        "hyphens, starting with a letter, e.g. 'aj-semantic-v4-128'")
    tpu = config.tpu
    if not tpu.zone:
        problems.append("tpu.zone is empty: set config.tpu.zone to a zone that offers the "
                        "accelerator, e.g. 'us-central2-b' for v4")
    elif not _ZONE.fullmatch(str(tpu.zone)):
        problems.append(f"tpu.zone={tpu.zone!r} is not a zone name like 'us-central2-b'")
    try:
        parse_tpu_type(tpu.accelerator_type)
    except ValueError as error:
        problems.append(f"tpu.accelerator_type: {error}")
    if not isinstance(tpu.num_slices, int) or tpu.num_slices < 1:
        problems.append(f"tpu.num_slices={tpu.num_slices!r}: use 1, or N > 1 for multislice")
    if tpu.capacity not in CAPACITIES:
        problems.append(f"tpu.capacity={tpu.capacity!r}: use one of {CAPACITIES}")
    elif tpu.capacity == "preemptible" and tpu.num_slices > 1:
        problems.append("tpu.capacity='preemptible' with num_slices > 1: queued resources "
                        "(multislice) take 'spot' instead")
    source = config.source
    if source.method not in SOURCE_METHODS:
        problems.append(f"source.method={source.method!r}: use 'git' (clone on each worker) or "
                        "'scp' (copy `git archive REF` from here)")
    if source.method == "git" and not source.repo_url:
        problems.append("source.repo_url is empty: set the URL each worker clones, "
                        "or use source.method='scp'")
    if not source.ref or not _NO_SPACE.fullmatch(str(source.ref)) or str(source.ref).startswith("-"):
        problems.append(f"source.ref={source.ref!r}: name a branch, tag or commit, e.g. 'main'")
    if not _safe_relative(str(source.workdir)):
        problems.append(f"source.workdir={source.workdir!r}: use a path relative to the worker's "
                        "home directory, without '..' or '~', e.g. 'audiolm-jax'")
    if config.run.log_file and not _safe_relative(str(config.run.log_file)):
        problems.append(f"run.log_file={config.run.log_file!r}: use a path relative to the "
                        "workdir, e.g. 'logs/train.log'")
    if not re.fullmatch(r"3\.[0-9]+", str(config.install.python)):
        problems.append(f"install.python={config.install.python!r}: use a version like '3.11'")
    _check_experiment(config.experiment, problems)
    _raise(path, problems)


def validate_slurm_job(config: ml_collections.ConfigDict, path: str = "<spec>") -> None:
    """Raises SpecError listing every problem of a SLURM job spec."""
    _check_shape(config, slurm_job(), "slurm_job", path)
    problems: list[str] = []
    s = config.slurm
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(config.name)):
        problems.append(f"name={config.name!r}: a job name of letters, digits, '.', '_' or '-'")
    for field in ("nodes", "gpus_per_node"):
        if not isinstance(s[field], int) or s[field] < 1:
            problems.append(f"slurm.{field}={s[field]!r}: a positive integer")
    if not isinstance(s.cpus_per_task, int) or s.cpus_per_task < 0:
        problems.append(f"slurm.cpus_per_task={s.cpus_per_task!r}: 0 (cluster default) or a count")
    if s.process_per not in PROCESS_PER:
        problems.append(f"slurm.process_per={s.process_per!r}: 'gpu' (one task per GPU) or 'node'")
    if not _SLURM_TIME.fullmatch(str(s.time)):
        problems.append(f"slurm.time={s.time!r}: a SLURM time such as '24:00:00' or '2-00:00:00'")
    # #SBATCH lines are parsed by sbatch, not by a shell: quoting cannot protect spaces there.
    for field in ("partition", "account"):
        if s[field] and not _NO_SPACE.fullmatch(str(s[field])):
            problems.append(f"slurm.{field}={s[field]!r}: no spaces (it goes into an #SBATCH line)")
    if not _NO_SPACE.fullmatch(str(s.output)):
        problems.append(f"slurm.output={s.output!r}: a path without spaces, e.g. 'logs/%x-%j.out'")
    for item in s.extra_sbatch:
        if not re.fullmatch(r"--?[A-Za-z][-A-Za-z0-9]*(=\S+)?", str(item)):
            problems.append(f"slurm.extra_sbatch has {item!r}: one sbatch option without spaces, "
                            "e.g. '--qos=high'")
    if not str(s.workdir).startswith("/") or not _NO_SPACE.fullmatch(str(s.workdir)):
        problems.append(f"slurm.workdir={s.workdir!r}: the absolute path of the checkout on the "
                        "shared filesystem, without spaces (it goes into #SBATCH --chdir)")
    if not s.venv:
        problems.append("slurm.venv is empty: the virtualenv holding audiolm-jax, e.g. '.venv'")
    port = s.coordinator_port
    if not isinstance(port, int) or not (port == 0 or 1024 <= port <= 65535):
        problems.append(f"slurm.coordinator_port={port!r}: 0 (from the job id) or 1024-65535")
    _check_experiment(config.experiment, problems)
    _raise(path, problems)
