"""Stage model size, FLOPs per token (MFU), and the gin model configs."""
import dataclasses
from pathlib import Path

import gin
import pytest

from audiolm_jax.lm import TransformerConfig, flops_per_token, param_count
from audiolm_jax.lm.layouts import AudioVocabulary

GIN_MODELS = Path(__file__).resolve().parent.parent / "gin" / "models"
PAPER = TransformerConfig(vocab_size=AudioVocabulary(1024, 12, 1024).size)  # defaults = paper


def test_paper_vocabulary_is_padded_to_128():
    assert PAPER.vocab_size == 3 + 1024 + 12 * 1024 == 13315
    assert PAPER.padded_vocab_size == 13440


def test_paper_flops_per_token_matches_hand_count():
    d, layers, heads, head_dim, ff, vocab, seq = 1024, 12, 16, 64, 4096, 13440, 2048
    per_layer = 4 * d * d + 3 * d * ff          # q, k, v, out + gated-GELU wi_0, wi_1, wo
    matmul_params = layers * per_layer + d * vocab
    assert matmul_params == 215_089_152
    expected = 6 * matmul_params + 12 * layers * heads * head_dim * seq
    assert expected == 1_592_524_800
    assert flops_per_token(PAPER, seq) == expected


def test_paper_param_count_is_about_0_3b():
    """The paper quotes 0.3B per stage; its stated sizes give 0.23B with gated GELU and untied
    embeddings (0.18B with a plain GELU), the rest is not specified in the paper."""
    count = param_count(PAPER)
    per_layer = 4 * 1024 * 1024 + 3 * 1024 * 4096 + 2 * 1024    # + two RMSNorm scales
    assert count == 12 * per_layer + 2 * 13440 * 1024 + 1024 + 16 * 32
    assert 0.2e9 < count < 0.35e9
    assert param_count(dataclasses.replace(PAPER, tie_embeddings=True)) == count - 13440 * 1024
    assert param_count(dataclasses.replace(PAPER, feed_forward="gelu")) == count - 12 * 1024 * 4096


@pytest.mark.parametrize("name,layers,d_model", [("lm_paper.gin", 12, 1024), ("lm_tiny.gin", 2, 64)])
def test_gin_model_configs(name, layers, d_model):
    try:
        gin.parse_config_file(str(GIN_MODELS / name))
        config = TransformerConfig()
    finally:
        gin.clear_config()
    assert (config.num_layers, config.d_model) == (layers, d_model)
    if name == "lm_paper.gin":
        assert config == TransformerConfig(vocab_size=PAPER.vocab_size, dtype="bfloat16")
    else:
        assert config.vocab_size == AudioVocabulary(64, 4, 32).size
