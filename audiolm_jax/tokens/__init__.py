"""Token caches: the offline tokenize job (frozen codec + semantic tokenizer) and its cache format.

`cache` is numpy-only (stage data readers import it without JAX models); `job` runs the models.
"""
from audiolm_jax.tokens.cache import (
    TokenCache,
    TokenCacheError,
    Utterance,
    read_shard,
    shard_name,
    write_manifest,
    write_shard,
)

__all__ = ["TokenCache", "TokenCacheError", "Utterance", "read_shard", "shard_name",
           "write_manifest", "write_shard"]
