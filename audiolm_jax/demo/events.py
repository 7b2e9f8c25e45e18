"""Scalars back from the TensorBoard event files the trainer writes (<workdir>/tensorboard).

The files are TFRecords of `Event` protos; tensorboardX (already a core dependency, it writes
them) ships the proto, so reading needs neither TensorFlow nor the tensorboard package.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

_HEADER = struct.Struct("<Q")  # record length; then a masked CRC of it, the data, its CRC


def _records(path: Path):
    data = path.read_bytes()
    pos = 0
    while pos + 12 <= len(data):
        (length,) = _HEADER.unpack_from(data, pos)
        start = pos + 12
        if start + length + 4 > len(data):
            return  # a record still being written (or a truncated file): stop at the last whole one
        yield data[start:start + length]
        pos = start + length + 4


def read_scalars(logdir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...] sorted by step} from every event file under `logdir`.

    A missing folder is an empty dict (a run that never logged); a later value for the same
    (tag, step), e.g. after a resume, replaces the earlier one.
    """
    from tensorboardX.proto import event_pb2  # noqa: PLC0415 - only the report needs it

    logdir = Path(logdir)
    by_tag: dict[str, dict[int, float]] = {}
    if not logdir.is_dir():
        return {}
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        for record in _records(path):
            event = event_pb2.Event.FromString(record)
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value":
                    by_tag.setdefault(value.tag, {})[int(event.step)] = float(value.simple_value)
    return {tag: sorted(points.items()) for tag, points in sorted(by_tag.items())}
