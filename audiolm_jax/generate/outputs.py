"""Files of a generation: one WAV per row, a spectrogram PNG with the prompt boundary, tokens JSON.

    OUT/sample_000.wav ...   rows prompt-major (prompt p, sample s -> row p * samples + s)
    OUT/spectrogram.png      log-mel of every row, a line where the prompt ends
    OUT/tokens.json          per row: semantic ids (as the stages saw them) and codes [frames][Q]
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from audiolm_jax.audio import save_audio
from audiolm_jax.generate.pipeline import Generation


def write_spectrogram(path: str | os.PathLike, wavs: np.ndarray, sample_rate: int,
                      boundary_s: float | None, titles: list[str]) -> None:
    """Log-mel spectrograms of float [rows, samples], one panel per row, a dashed line at
    `boundary_s` (the end of the prompt). Uses matplotlib's Agg backend (no display)."""
    import librosa  # noqa: PLC0415
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = wavs.shape[0]
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.2 * rows), squeeze=False)
    for ax, wav, title in zip(axes[:, 0], wavs, titles):
        mel = librosa.feature.melspectrogram(y=np.asarray(wav, np.float32), sr=sample_rate,
                                             n_fft=1024, hop_length=160, n_mels=80)
        ax.imshow(librosa.power_to_db(mel + 1e-10, ref=np.max), origin="lower", aspect="auto",
                  extent=(0, wav.shape[0] / sample_rate, 0, 80), cmap="magma")
        if boundary_s:
            ax.axvline(boundary_s, color="cyan", linestyle="--", linewidth=1.5)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("seconds (dashed line: end of the prompt)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_generation(out_dir: str | os.PathLike, generation: Generation, *,
                     info: dict[str, Any] | None = None, spectrogram: bool = True) -> list[Path]:
    """Writes the files above (and `info` into tokens.json); returns the WAV paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = generation.wavs.shape[0]
    paths = []
    for row in range(rows):
        path = out / f"sample_{row:03d}.wav"
        save_audio(path, generation.wavs[row], sample_rate=generation.sample_rate)
        paths.append(path)
    boundary = generation.prompt_samples / generation.sample_rate if generation.prompt_frames else None
    if spectrogram:
        titles = [f"{p.name}" + (f" (prompt {boundary:.2f} s)" if boundary else "") for p in paths]
        write_spectrogram(out / "spectrogram.png", generation.wavs, generation.sample_rate,
                          boundary, titles)
    record = {
        **(info or {}),
        "sample_rate": generation.sample_rate,
        "prompt_frames": generation.prompt_frames,
        "prompt_seconds": boundary or 0.0,
        "num_samples": generation.num_samples,
        "stage_seconds": generation.seconds,
        "notes": generation.notes,
        "rows": [{"wav": p.name, "semantic": generation.semantic[i].tolist(),
                  "codes": generation.codes[i].tolist()} for i, p in enumerate(paths)],
    }
    tmp = out / ".tokens.json.tmp"
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, out / "tokens.json")
    return paths
