"""Scores codec reconstructions made elsewhere against their corpus originals, beside Opus at the
same rate on the same audio: for a codec trained on a machine whose checkpoint stays there while
its audio comes back (e.g. `eval_audio.py`'s reconstruction/ folder from a GPU run).

    python benchmarks/score_reconstructions.py --corpus C --reconstruction D/reconstruction \\
        --kbps 6 --out results/x.json

Each file D/<id>.wav|flac is matched to the corpus utterance <id>, which is cut to the
reconstruction's length (sources may have been cut). Metrics, statistics and the Opus round trip
are codec_quality.py's (mean, 95% bootstrap CI; paired codec - Opus differences).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from codec_quality import (OPUS_MODES, SAMPLE_RATE, _executor, opus_condition,  # noqa: E402
                           paired_difference, score_opus, score_pair, summary)

from audiolm_jax.audio import load_audio  # noqa: E402
from audiolm_jax.data.corpus import scan_corpus  # noqa: E402
from audiolm_jax.eval import codec_metrics  # noqa: E402
from audiolm_jax.eval.run_info import command_line, machine_info, utc_now, write_json  # noqa: E402
from audiolm_jax.eval.tables import generated_files  # noqa: E402


def matched_pairs(corpus: str, directory: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(id, original cut to the reconstruction's length, reconstruction)] in id order; files
    are matched to utterances as the evaluation tables match generated audio."""
    matched, unknown = generated_files(directory, scan_corpus(corpus))
    if unknown:
        raise SystemExit(f"score_reconstructions: {directory}: "
                         f"{[os.path.basename(p) for p in unknown[:3]]} are not utterances of "
                         f"{corpus}")
    pairs = []
    for path, example in sorted(matched, key=lambda m: m[1].id):
        deg = load_audio(path, SAMPLE_RATE)
        ref = load_audio(example.path, SAMPLE_RATE)[:len(deg)]
        pairs.append((example.id, ref, deg[:len(ref)]))
    return pairs


def score(pairs, kbps: float, metrics, workers: int, seed: int = 0) -> dict[str, Any]:
    names = ["codec"] + [opus_condition(kbps, m) for m in OPUS_MODES]
    with _executor(workers) as pool:
        jobs = {("codec", uid): pool.submit(score_pair, ref, deg, metrics, False)
                for uid, ref, deg in pairs}
        jobs.update({(opus_condition(kbps, m), uid): pool.submit(score_opus, ref, kbps, m, metrics,
                                                                 False, False)
                     for m in OPUS_MODES for uid, ref, _ in pairs})
        rows = {key: job.result() for key, job in jobs.items()}
    ids = [uid for uid, _, _ in pairs]
    values = {(n, m): [rows[n, uid]["scores"].get(m) for uid in ids] for n in names
              for m in metrics}
    out: dict[str, Any] = {m: {n: summary(values[n, m], seed) for n in names} for m in metrics}
    out["codec_minus_opus"] = {n: {m: paired_difference(values["codec", m], values[n, m], seed)
                                   for m in metrics} for n in names[1:]}
    out["opus_real_kbps"] = {n: summary([rows[n, uid].get("real_kbps") for uid in ids], seed)
                             for n in names[1:]}
    out["utterances"] = ids
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--reconstruction", required=True, help="folder of <id>.wav|flac")
    p.add_argument("--kbps", type=float, required=True, help="the codec's rate (Opus matches it)")
    p.add_argument("--metrics", nargs="+", default=list(codec_metrics.METRICS))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    result = {"benchmark": "score_reconstructions", "corpus": args.corpus,
              "reconstruction": args.reconstruction, "kbps": args.kbps,
              "scores": score(matched_pairs(args.corpus, args.reconstruction), args.kbps,
                              tuple(args.metrics), args.workers),
              "command": command_line(), "machine": machine_info(), "date": utc_now()}
    write_json(args.out, result)
    for m in args.metrics:
        print(m, {n: round(s["mean"], 3) for n, s in result["scores"][m].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
