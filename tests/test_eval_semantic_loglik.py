"""Stage-1 log-likelihood for the sWUGGY/sBLIMP pairs: equals the full-logits computation,
padding-invariant, counts deduplicated tokens; `audiolm-jax eval pairs` writes its results."""
import dataclasses
import json

import jax
import numpy as np
import pytest
import soundfile as sf
from flax import nnx
from model_exports import export_model
from test_generate_pipeline import _speechy

from audiolm_jax import cli
from audiolm_jax.config import resolve_gin_file
from audiolm_jax.eval.pairs import MANIFEST, PairItem
from audiolm_jax.eval.semantic_loglik import SemanticLoglik, bucket_length, load_semantic_loglik
from audiolm_jax.gin_reader import dataclass_from_gin
from audiolm_jax.lm.config import TransformerConfig
from audiolm_jax.lm.layouts import BOS, dedup_consecutive
from audiolm_jax.lm.transformer import Transformer
from audiolm_jax.semantic.tokenizer import SemanticTokenizer, bucketed_ids
from audiolm_jax.semantic.w2v_bert import W2vBert, W2vBertConfig

K = 64                                          # semantic ids of the tiny world (lm_tiny: 195 ids)


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """(random lm_tiny stage-1 model, its export dir, tiny tokenizer, its saved dir)."""
    root = tmp_path_factory.mktemp("stage1")
    gin_path = resolve_gin_file("models/lm_tiny")
    gin_text = open(gin_path).read()
    model = Transformer(dataclass_from_gin(TransformerConfig, [(gin_text, gin_path)]),
                        rngs=nnx.Rngs(3))
    export = export_model(model, root / "semantic", gin_text)
    w2v = W2vBert(W2vBertConfig(model_dim=32, num_heads=4, ff_dim=64, num_contrastive_layers=1,
                                num_mlm_layers=2, subsample_channels=8, codebook_groups=1,
                                codebook_entries=16, codevector_dim=16, contrastive_dim=16),
                  rngs=nnx.Rngs(0))
    centroids = np.random.default_rng(0).standard_normal((K, 32))
    tokenizer = SemanticTokenizer(w2v, 1, np.zeros(32), np.ones(32), centroids)
    tokenizer.save(root / "tokenizer")
    return model, export, tokenizer, str(root / "tokenizer")


def _direct_loglik(model, sequence):
    """Reference: unpadded forward pass over [BOS] + sequence[:-1], log-softmax in numpy."""
    inputs = np.concatenate([[BOS], sequence[:-1]]).astype(np.int32)[None]
    logits = np.asarray(model(jax.numpy.asarray(inputs))[0], np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return float(logp[np.arange(sequence.size), sequence].sum())


@dataclasses.dataclass
class _FixedTokenizer:
    """Returns the same ids for any audio: makes the deduplicated length known in advance."""
    ids: np.ndarray
    num_clusters: int = K

    def tokenize(self, wav, lengths=None):
        return self.ids


def test_loglik_equals_full_logits_and_ignores_padding(stage):
    model, export, tokenizer, tokenizer_dir = stage
    scorer = load_semantic_loglik(export, tokenizer_dir, bucket=16)
    wav = _speechy(1.0)
    sequence = scorer.sequence(wav)
    raw = bucketed_ids(tokenizer, wav, 32000)   # the audio bucket: 2 s
    # The bucket changes neither the ids nor (so) the score, only how many programs compile.
    np.testing.assert_array_equal(raw, bucketed_ids(tokenizer, wav, 640 * 3))
    assert load_semantic_loglik(export, tokenizer_dir, bucket=16, audio_bucket_seconds=0.12)(
        wav) == scorer(wav)
    assert sequence.size == dedup_consecutive(raw).size and sequence.min() >= 3 and sequence.max() < 3 + K
    total, count = scorer(wav)
    assert count == sequence.size
    np.testing.assert_allclose(total, _direct_loglik(model, sequence), rtol=1e-5)
    for length in (sequence.size, sequence.size + 37):          # unpadded, and a longer padding
        again, n = scorer.sequence_loglik(sequence, length=length)
        assert n == count
        np.testing.assert_allclose(again, total, rtol=1e-5)
    assert bucket_length(sequence.size, 16) % 16 == 0 and bucket_length(0, 16) == 16


def test_count_is_the_deduplicated_length(stage):
    model = stage[0]
    ids = np.array([5, 5, 7, 7, 7, 2, 5, 5, 9], np.int32)      # dedup: 5 7 2 5 9
    scorer = SemanticLoglik(model, _FixedTokenizer(ids), bucket=8)
    total, count = scorer(np.zeros(16000, np.float32))
    assert count == 5
    np.testing.assert_allclose(total, _direct_loglik(model, np.array([5, 7, 2, 5, 9]) + 3),
                               rtol=1e-5)
    total_raw, count_raw = SemanticLoglik(model, _FixedTokenizer(ids), dedup=False)(
        np.zeros(16000, np.float32))
    assert count_raw == ids.size and total_raw != total
    with pytest.raises(ValueError, match="vocab_size"):
        SemanticLoglik(model, _FixedTokenizer(ids, num_clusters=500))


def test_cli_eval_pairs_writes_accuracies(stage, tmp_path, capsys):
    _, export, _, tokenizer_dir = stage
    pairs_dir = tmp_path / "pairs"
    items = []
    for i, (kind, phenomenon) in enumerate([("swuggy", "word_nonword"), ("swuggy", "word_nonword"),
                                            ("sblimp", "subject_verb_agreement")]):
        good, bad = f"{kind}/v/{i}_good.wav", f"{kind}/v/{i}_bad.wav"
        for rel, seed in ((good, 2 * i), (bad, 2 * i + 1)):
            (pairs_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(pairs_dir / rel, _speechy(0.5 + 0.1 * i, seed), 16000)
        items.append(PairItem(kind, f"{kind}-{i:04d}", "v", phenomenon, "a", "b", good, bad))
    (pairs_dir / MANIFEST).write_text(json.dumps({"items": [dataclasses.asdict(it) for it in items]}))
    out = tmp_path / "eval_pairs.json"
    rc = cli.main(["eval", "pairs", "--pairs-dir", str(pairs_dir), "--semantic-run", export,
                   "--tokenizer", tokenizer_dir, "--out", str(out), "--seed", "4"])
    assert rc == 0, capsys.readouterr()
    result = json.loads(out.read_text())
    assert result["seed"] == 4 and result["counts"] == {"swuggy": 2, "sblimp": 1}
    assert result["swuggy"]["n"] == 2 and result["sblimp"]["n"] == 1 and result["overall"]["n"] == 3
    for key in ("swuggy", "sblimp", "overall"):
        assert 0.0 <= result[key]["accuracy"] <= 1.0 and len(result[key]["ci95"]) == 2
    assert set(result["sblimp"]["by_phenomenon"]) == {"subject_verb_agreement"}
