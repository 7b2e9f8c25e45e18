"""report.html: what the demo trained and generated, in one self-contained page.

Loss curves of every run (PNG from the trainer's TensorBoard scalars), per held-out prompt a
spectrogram (original, codec reconstruction, continuation; dashed line at the prompt's end) and
<audio> players, and the key figures (codec mel distance, stage losses, token counts, timings).
Images and audio are files beside the page, referenced by relative paths; plain HTML/CSS, no
script and nothing fetched from the network.
"""
from __future__ import annotations

import datetime
import html
import os
import platform
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from audiolm_jax.demo.events import read_scalars

ASSETS = "report_files"
# Runs the report knows, in pipeline order: (folder under runs/, title).
RUNS = (("codec", "Codec (SoundStream, tiny)"), ("w2v_bert", "w2v-BERT (tiny)"),
        ("stage_semantic", "Stage 1: semantic LM"), ("stage_coarse", "Stage 2: coarse acoustic LM"),
        ("stage_fine", "Stage 3: fine acoustic LM"))
# Curves worth a panel: losses, the codec's mel distance, accuracies; not rates or norms.
_CURVE = re.compile(r"(^|/)(loss|[a-z_]*_loss|reconstruction|mel_distance|[a-z_]*accuracy)$")
_MAX_PANELS = 6
# Headline scalars per run, shown in the metrics table when logged.
KEY_SCALARS = ("eval/q4/mel_distance", "eval/q1/mel_distance", "train/generator/reconstruction",
               "train/model/loss",
               "train/loss", "eval/loss", "eval/accuracy", "eval/mlm_accuracy",
               "eval/contrastive_accuracy")

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       padding: 0 1em; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: left; font-size: .92em; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #ddd; }
.sample { border: 1px solid #ddd; border-radius: 6px; padding: .6em 1em; margin: 1em 0; }
.players { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: .6em; }
.players figure { margin: 0; } figcaption { font-size: .85em; color: #555; }
.note { color: #666; font-size: .9em; }
"""


def curve_tags(tags: Sequence[str]) -> list[str]:
    """The tags that get a loss-curve panel: losses, mel distance, accuracies (train first)."""
    chosen = [t for t in tags if _CURVE.search(t) and "grad_norm" not in t]
    chosen.sort(key=lambda t: (not t.startswith("train/"), t.count("/"), t))
    return chosen[:_MAX_PANELS]


def plot_curves(path: Path, title: str, scalars: Mapping[str, list[tuple[int, float]]]) -> bool:
    """One PNG with a panel per curve tag; False (no file) when the run logged none."""
    tags = curve_tags(list(scalars))
    if not tags:
        return False
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    cols = min(3, len(tags))
    rows = -(-len(tags) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[len(tags):]:
        ax.axis("off")
    for ax, tag in zip(axes.flat, tags):
        steps, values = zip(*scalars[tag])
        ax.plot(steps, values, marker="o" if len(steps) < 8 else None, markersize=3)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _rel(path: Path, root: Path) -> str:
    """A relative URL from the page to a file beside it (forward slashes, escaped)."""
    return _esc(Path(os.path.relpath(path, root)).as_posix())


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return _esc(x)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_fmt(c)}</td>' if isinstance(c, (int, float))
                         else f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _sample_html(sample: Mapping[str, Any], samples_dir: Path, root: Path) -> str:
    folder = samples_dir / sample["folder"]
    players = []
    for stem, caption in (("prompt", f"prompt: first {sample['prompt_seconds']:.1f} s"),
                          ("continuation", "prompt + AudioLM continuation"),
                          ("reconstruction", "codec reconstruction (encode + decode)"),
                          ("original", "original (ground truth)")):
        wav = folder / f"{stem}.wav"
        if wav.is_file():
            players.append(f'<figure><figcaption>{_esc(caption)}</figcaption>'
                           f'<audio controls preload="metadata" src="{_rel(wav, root)}">'
                           f'<source src="{_rel(wav, root)}" type="audio/wav"></audio></figure>')
    spec = folder / "spectrogram.png"
    image = (f'<img src="{_rel(spec, root)}" alt="spectrograms of {_esc(sample["name"])}">'
             if spec.is_file() else "")
    figures = (f"reconstruction mel distance {sample['reconstruction_mel_distance']:.3f}; "
               f"continuation vs the true next seconds {sample['continuation_mel_distance_after_prompt']:.3f}"
               if "reconstruction_mel_distance" in sample else "")
    return (f'<div class="sample"><h3>{_esc(sample["name"])} <span class="note">(voice '
            f'{_esc(sample.get("voice", "?"))}; {_esc(figures)})</span></h3>{image}'
            f'<div class="players">{"".join(players)}</div></div>')


def write_report(out: str | os.PathLike, *, runs: str | os.PathLike,
                 samples: Mapping[str, Any] | None, token_counts: Mapping[str, Mapping[str, Any]],
                 timings: Mapping[str, Mapping[str, Any]], wall_seconds: float | None = None,
                 samples_dir: str | os.PathLike | None = None) -> Path:
    """Writes `out/report.html` (+ `out/report_files/*.png`); returns the page's path.

    runs: folder of trainer workdirs named as in RUNS (missing ones are left out).
    samples: generate_samples()'s info ({"samples": [...], ...}) with WAVs and spectrograms in
      `samples_dir` (default out/samples)/<folder>/. token_counts: per split, token_counts().
    timings: StepRunner.timings().
    """
    out, runs = Path(out), Path(runs)
    samples_dir = Path(samples_dir) if samples_dir else out / "samples"
    assets = out / ASSETS
    sections, metric_rows = [], []
    for folder, title in RUNS:
        scalars = read_scalars(runs / folder / "tensorboard")
        if not scalars:
            continue
        png = assets / f"loss_{folder}.png"
        if plot_curves(png, title, scalars):
            sections.append(f'<h3>{_esc(title)}</h3><img src="{_rel(png, out)}" '
                            f'alt="loss curves: {_esc(title)}">')
        for tag in KEY_SCALARS:
            if tag in scalars:
                (first_step, first), (last_step, last) = scalars[tag][0], scalars[tag][-1]
                metric_rows.append((title, tag, first_step, first, last_step, last))

    parts = ["<h1>AudioLM in JAX: the small-world demo</h1>",
             f'<p class="note">Written {_esc(datetime.datetime.now().isoformat(timespec="seconds"))}'
             f" on {_esc(platform.node())} ({_esc(platform.machine())}, {os.cpu_count()} CPUs)"
             + (f"; the demo's steps took {wall_seconds:.0f} s" if wall_seconds is not None else "")
             + ". Tiny models trained for minutes on CPU: they show the whole pipeline working "
               "and learning, not AudioLM's quality.</p>"]
    if samples and samples.get("samples"):
        parts.append("<h2>Continuations of held-out voices</h2><p>Each prompt is the first "
                     "seconds of an utterance by a voice no model was trained on; the stages "
                     "generate what follows. Rows of the spectrogram: original, codec "
                     "reconstruction, continuation; the dashed line marks the prompt's end.</p>")
        parts += [_sample_html(s, samples_dir, out) for s in samples["samples"]]
    parts.append("<h2>Key figures</h2>")
    if metric_rows:
        parts.append(_table(("model", "scalar", "first step", "first", "last step", "last"),
                            metric_rows))
    if samples and samples.get("samples"):
        rows = [(s["name"], s["reconstruction_mel_distance"],
                 s["continuation_mel_distance_after_prompt"]) for s in samples["samples"]]
        parts.append(_table(("prompt", "codec mel distance (6 s, lower is better)",
                             "continuation vs truth after the prompt"), rows))
    if token_counts:
        rows = [(split, c["utterances"], c["semantic_tokens"], c["acoustic_frames"],
                 c["acoustic_tokens"], c["vocab_size"]) for split, c in token_counts.items()]
        parts.append(_table(("token cache", "utterances", "semantic ids (25 Hz)",
                             "acoustic frames (50 Hz)", "acoustic ids", "vocabulary"), rows))
    if timings:
        rows = [(t["title"], t["seconds"], "earlier run" if t.get("skipped") else "this run")
                for t in timings.values()]
        parts.append(_table(("step", "seconds", "when"), rows))
    if sections:
        parts.append("<h2>Loss curves</h2>" + "".join(sections))
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>audiolm-jax demo report</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
