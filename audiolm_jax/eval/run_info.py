"""What every measured figure is stored with: the command, the machine, the date; and the JSON
writer that stores it (atomically, NaN as null)."""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import sys
from typing import Any, Sequence


def command_line(argv: Sequence[str] | None = None, script: str | None = None) -> str:
    """The shell command that reproduces this run (`python SCRIPT ARGS`)."""
    argv = list(sys.argv if argv is None else [script or sys.argv[0], *argv])
    if argv and os.path.isabs(argv[0]):
        try:
            argv[0] = os.path.relpath(argv[0])
        except ValueError:  # another drive (Windows)
            pass
    return "python " + " ".join(shlex.quote(a) for a in argv)


def machine_info() -> dict[str, Any]:
    """Host, OS, CPU count, Python, JAX version, backend and device kinds."""
    import jax  # noqa: PLC0415 - only runs that use JAX describe it
    devices = jax.devices()
    return {
        "host": platform.node(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "jax": jax.__version__,
        "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
        "device_count": len(devices),
    }


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, result: dict) -> None:
    """Writes `result` to `path` (parents created) via a temporary file and a rename."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(jsonable(result), f, indent=2, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)
