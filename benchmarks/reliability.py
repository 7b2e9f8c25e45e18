"""The reliability campaign: more trials than tests/reliability runs, counted in one report.

    .venv/bin/python benchmarks/reliability.py [--fuzz 400] [--trainer_trials 3] \
        [--tokenize_trials 3] [--seed 0] [--out results/reliability.json]

  fuzz       damaged/absurd audio files (tests/reliability/audio_fuzz.py) through load_audio and
             audio_info: each must load or raise a typed AudioError, within a time limit.
  trainers   per trainer (codec, w2v-BERT, stage LM; tests/reliability/faults.py): an
             uninterrupted reference run, then trials that kill -9 and SIGTERM one run at random
             steps and rerun it; exact = final variables bitwise equal to the reference.
  tokenize   kill -9 of `audiolm-jax tokenize` at a random moment, rerun, cache byte-identical
             (tests/reliability/tokenize_faults.py).
  checks     the disk-full, untrusted-file and numerics tests, run once under pytest.

Writes `fuzz_cases`, `faults_injected`, `runs_resumed_exactly`, `data_lost` (faults after which
committed work was not resumed, plus caches that differ after a rerun: must be 0) and a breakdown.
Runs on CPU; about ten minutes on two cores (the codec's first compile is most of it).
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from reliability import faults, tokenize_faults  # noqa: E402
from reliability.audio_fuzz import MUTATIONS, SEEDS, extension, loader_outcome, mutate  # noqa: E402

TRAINERS = ("codec", "w2v_bert", "lm")
CHECK_FILES = ("tests/reliability/test_disk_full.py", "tests/reliability/test_untrusted_files.py",
               "tests/reliability/test_numerics.py")


def fuzz_campaign(cases: int, rng: random.Random, workdir: Path) -> dict:
    labels: collections.Counter = collections.Counter()
    by_mutation: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    broken, slowest = [], 0.0
    for i in range(cases):
        seed, mutation = rng.choice(sorted(SEEDS)), rng.choice(MUTATIONS)
        draw = rng.getrandbits(32)
        path = workdir / f"case{extension(seed)}"
        path.write_bytes(mutate(seed, mutation, random.Random(draw)))
        start = time.perf_counter()
        outcome = loader_outcome(path)
        slowest = max(slowest, time.perf_counter() - start)
        labels[outcome.label] += 1
        by_mutation[mutation][outcome.label] += 1
        if outcome.broken:
            broken.append({"seed": seed, "mutation": mutation, "draw": draw, **vars(outcome)})
    return {"cases": cases, "outcomes": dict(labels),
            "by_mutation": {k: dict(v) for k, v in sorted(by_mutation.items())},
            "escaped_or_hung": broken, "slowest_case_s": round(slowest, 3)}


def trainer_campaign(trainer: str, trials: int, rng: random.Random, workdir: Path) -> dict:
    corpus = workdir / "corpus"
    if not corpus.exists():
        from corpus_trees import write_speech_tree
        from reliability.test_trainer_faults import TREE
        write_speech_tree(corpus, TREE)
    root = workdir / trainer
    root.mkdir()
    cache = root / "xla_cache"
    start = time.perf_counter()
    steps, save_every = 8, 2
    reference = faults.reference_run(trainer, root, corpus, cache, steps, save_every)
    results = []
    for i in range(trials):
        trial_root = root / f"trial{i}"
        trial_root.mkdir()
        sequence = [rng.choice(faults.FAULTS) for _ in range(rng.randint(1, 3))]
        results.append(faults.fault_trial(trainer, trial_root, corpus, cache, reference, sequence,
                                          rng, steps, save_every).as_dict())
    return {"steps": steps, "save_every": save_every, "trials": results,
            "seconds": round(time.perf_counter() - start, 1)}


def pytest_checks(workdir: Path) -> dict:
    """Runs CHECK_FILES once; counts from pytest's JUnit XML (its terminal summary varies)."""
    xml = workdir / "checks.xml"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={xml}", *CHECK_FILES], cwd=str(ROOT), capture_output=True,
                          text=True)
    out = {"command": "pytest " + " ".join(CHECK_FILES), "returncode": done.returncode}
    if xml.exists():
        suite = ElementTree.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        failed = [c.get("name") for c in suite.iter("testcase")
                  if c.find("failure") is not None or c.find("error") is not None]
        out.update(counts, passed=counts["tests"] - counts["failures"] - counts["errors"]
                   - counts["skipped"], failed=failed)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fuzz", type=int, default=400)
    parser.add_argument("--trainer_trials", type=int, default=3)
    parser.add_argument("--tokenize_trials", type=int, default=3)
    parser.add_argument("--trainers", default=",".join(TRAINERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip_checks", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "results" / "reliability.json"))
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    started = time.perf_counter()
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        tmp = Path(tmp)
        print(f"fuzzing {args.fuzz} files ...", flush=True)
        (tmp / "fuzz").mkdir()
        report["fuzz"] = fuzz_campaign(args.fuzz, rng, tmp / "fuzz")
        report["trainers"] = {}
        for trainer in filter(None, args.trainers.split(",")):
            print(f"fault trials: {trainer} ...", flush=True)
            report["trainers"][trainer] = trainer_campaign(trainer, args.trainer_trials, rng, tmp)
        if args.tokenize_trials:
            print("fault trials: tokenize job ...", flush=True)
            (tmp / "tokenize").mkdir()
            report["tokenize"] = tokenize_faults.trials(tmp / "tokenize", args.tokenize_trials, rng)
        if not args.skip_checks:
            print("disk-full, untrusted-file and numerics tests ...", flush=True)
            report["checks"] = pytest_checks(tmp)

    trials = [t for r in report["trainers"].values() for t in r["trials"]]
    tokenize = report.get("tokenize", {"trials": [], "faults_injected": 0, "identical": 0})
    injected = sum(1 for t in trials for f in t["faults"] if f["at_step"] >= 0)
    summary = {
        "fuzz_cases": report["fuzz"]["cases"],
        "fuzz_escaped_or_hung": len(report["fuzz"]["escaped_or_hung"]),
        "faults_injected": injected + tokenize["faults_injected"],
        "runs_resumed_exactly": sum(t["resumed_exactly"] for t in trials) + tokenize["identical"],
        "runs_after_faults": len(trials) + len(tokenize["trials"]),
        "data_lost": sum(t["data_lost"] for t in trials)
                     + sum(not r["identical"] for r in tokenize["trials"]),
    }
    out = {**summary, "breakdown": report, "command": " ".join([sys.executable, *sys.argv]),
           "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)",
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "seconds": round(time.perf_counter() - started, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0 if summary["data_lost"] == 0 and summary["fuzz_escaped_or_hung"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
