"""Checks that the babbling rows of `audiolm-jax eval ablation` (eval/transcript_lm.py) tell
speech from babble, without any trained model: held-out utterances of at least 6 s stand in for
AudioLM's continuations, and the same utterances with everything after the 3 s prompt played
backwards (same voice and spectrum, no words) stand in for the acoustic-only model's.

    python3 benchmarks/babble_check.py --corpus C --work /tmp/babble --out results/eval_babble_check.json
"""
from __future__ import annotations

import argparse
import os
import sys


def write_pairs(corpus: str, work: str, prompt_seconds: float = 3.0, min_seconds: float = 6.0) -> int:
    import soundfile as sf

    from audiolm_jax.data.corpus import CorpusLayoutError, scan_corpus

    try:  # any audio extension: the FLAC tree or its Opus copy (pack_corpus.py)
        examples = scan_corpus(corpus, splits=["heldout_voices"])
    except (FileNotFoundError, CorpusLayoutError) as e:   # say why, not just "nothing found"
        raise SystemExit(f"babble_check: {corpus} cannot be read as a speech corpus: {e}") from e
    forward, backward = os.path.join(work, "forward"), os.path.join(work, "reversed")
    os.makedirs(forward, exist_ok=True)
    os.makedirs(backward, exist_ok=True)
    count = 0
    for example in examples:
        wav, rate = sf.read(example.path)
        if len(wav) < min_seconds * rate:
            continue
        name = f"{example.id}-s0.wav"
        cut = int(prompt_seconds * rate)
        reversed_wav = wav.copy()
        reversed_wav[cut:] = wav[cut:][::-1]
        sf.write(os.path.join(forward, name), wav, rate)
        sf.write(os.path.join(backward, name), reversed_wav, rate)
        count += 1
    return count


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", default="results/eval_babble_check.json")
    args = p.parse_args(argv)
    if not write_pairs(args.corpus, args.work):
        print(f"no held-out utterance of 6 s or more under {args.corpus}/heldout_voices",
              file=sys.stderr)
        return 1
    from audiolm_jax.cli import main as cli

    return cli(["eval", "ablation", "--corpus", args.corpus, "--out", args.out,
                "--continuation", os.path.join(args.work, "forward"),
                "--acoustic-only", os.path.join(args.work, "reversed")])


if __name__ == "__main__":
    sys.exit(main())
