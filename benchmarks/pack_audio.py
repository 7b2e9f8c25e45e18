"""Packs the WAV files under some directories into one tar of FLAC files (lossless, about half
the size), so generated audio fits the few small files a remote machine hands back:

    python3 benchmarks/pack_audio.py OUT.tar DIR [DIR ...]

Members are named DIR_BASENAME/relative/path.flac. The tar is written under a temporary name
and renamed when complete, so a file at OUT.tar is never half-written. Prints a one-line summary.
"""
from __future__ import annotations

import io
import os
import sys
import tarfile

import soundfile as sf


def pack(out_tar: str, dirs: list[str]) -> tuple[int, int]:
    count, raw = 0, 0
    tmp = f"{out_tar}.tmp-{os.getpid()}"
    with tarfile.open(tmp, "w") as tar:
        for root in dirs:
            if not os.path.isdir(root):
                continue
            base = os.path.basename(os.path.normpath(root))
            for dirpath, _, names in sorted(os.walk(root)):
                for name in sorted(n for n in names if n.endswith(".wav")):
                    path = os.path.join(dirpath, name)
                    audio, rate = sf.read(path, dtype="int16")
                    buf = io.BytesIO()
                    sf.write(buf, audio, rate, format="FLAC")
                    rel = os.path.relpath(path, root)[: -len(".wav")] + ".flac"
                    info = tarfile.TarInfo(os.path.join(base, rel))
                    data = buf.getvalue()  # not tell(): libsndfile seeks back to finish the header
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                    count, raw = count + 1, raw + os.path.getsize(path)
    os.replace(tmp, out_tar)
    return count, raw


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    count, raw = pack(argv[0], argv[1:])
    size = os.path.getsize(argv[0])
    print(f"packed {count} wav files ({raw / 2**20:.1f} MiB) into {argv[0]} ({size / 2**20:.1f} MiB)")
    return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main())
