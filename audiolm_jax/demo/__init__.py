"""`make demo` (= `audiolm-jax demo`): the whole AudioLM pipeline on the built-in small world, on
two CPU cores, ending in outputs/demo/report.html.

    world.py     the small-world corpora and their summaries
    runner.py    done-markers, per-step wall times, the summary
    pipeline.py  the chain of steps (train, k-means, export, tokenize, stages, generate)
    events.py    scalars back from the trainer's TensorBoard event files
    report.py    report.html: loss curves, spectrograms, audio players, metrics
"""
from audiolm_jax.demo.pipeline import run_demo
from audiolm_jax.demo.world import build_world, summary_lines

__all__ = ["build_world", "run_demo", "summary_lines"]
