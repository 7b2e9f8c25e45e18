"""kill -9 and SIGTERM at random steps in each trainer type (codec, w2v-BERT, stage LM), each from
its real gin config on one CPU device; the rerun resumes from the newest checkpoint and ends with
the variables of an uninterrupted run, bit for bit.

The trainer core's own subprocess tests (tiny LM on 8 devices: kill -9, SIGTERM, two processes)
are in tests/test_trainer_subprocess.py; the fallback past a truncated newest checkpoint is in
tests/test_trainer_checkpoint.py. Each trial here costs one cold compile plus three warm runs.
"""
from __future__ import annotations

import random

import pytest

from corpus_trees import write_speech_tree
from reliability.faults import fault_trial, reference_run

pytestmark = pytest.mark.slow
STEPS, SAVE_EVERY = 8, 2
# Clips of 1-1.3 s: the w2v-BERT crop (1 s) and the codec crop (0.2 s) both fit.
TREE = {"train": {("101", "7"): [1.1, 1.3, 1.0], ("102", "7"): [1.2, 1.05]}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault_corpus")
    write_speech_tree(root, TREE)
    return root


@pytest.mark.parametrize("trainer,seed", [("codec", 11), ("w2v_bert", 12), ("lm", 13)])
def test_kill_9_then_sigterm_then_rerun_ends_where_an_uninterrupted_run_does(tmp_path, corpus,
                                                                             trainer, seed):
    cache = tmp_path / "xla_cache"
    reference = reference_run(trainer, tmp_path, corpus, cache, STEPS, SAVE_EVERY)
    result = fault_trial(trainer, tmp_path, corpus, cache, reference, ["kill", "term"],
                         random.Random(seed), STEPS, SAVE_EVERY)
    injected = [f for f in result.faults if f.injected]
    assert [f.fault for f in injected] == ["kill", "term"], result
    assert result.data_lost == 0, result
    assert result.exact, f"final variables differ from the reference by {result.max_abs_diff}"
