"""The process's embedding cache: found again by (encoder, text), bounded in bytes, least recently used out first."""

from __future__ import annotations

import numpy as np

from streams.state.embedding_cache import ENTRY_OVERHEAD, EmbeddingCache

DIM = 8
ENTRY = DIM * 4 + ENTRY_OVERHEAD


def vector(seed: float) -> np.ndarray:
    return np.full(DIM, seed, dtype=np.float32)


def test_a_stored_vector_is_found_by_its_text_for_its_encoder_only() -> None:
    cache = EmbeddingCache(10 * ENTRY)
    cache.store("v1/fp32", ["a", "b"], [vector(1), vector(2)])
    found = cache.lookup("v1/fp32", ["a", "b", "c"])
    assert set(found) == {"a", "b"} and (found["b"] == vector(2)).all()
    assert cache.lookup("v1/int8", ["a"]) == {} and cache.lookup("v2/fp32", ["a"]) == {}
    assert (cache.hits, cache.misses) == (2, 3)


def test_the_cache_keeps_its_byte_bound_dropping_the_least_recently_used() -> None:
    cache = EmbeddingCache(3 * ENTRY)
    cache.store("m", ["a", "b", "c"], [vector(1), vector(2), vector(3)])
    cache.lookup("m", ["a"])  # "a" is used again: "b" is now the least recently used
    cache.store("m", ["d"], [vector(4)])
    assert set(cache.lookup("m", ["a", "b", "c", "d"])) == {"a", "c", "d"}
    assert len(cache) == 3 and cache.bytes == 3 * ENTRY <= cache.max_bytes
    cache.store("m", ["a"], [vector(9)])  # storing a text again replaces it, counted once
    assert cache.bytes == 3 * ENTRY and (cache.lookup("m", ["a"])["a"] == vector(9)).all()


def test_kept_vectors_are_read_only_copies_and_non_finite_ones_are_left_out() -> None:
    cache = EmbeddingCache(10 * ENTRY)
    given = vector(1)
    cache.store("m", ["a", "nan"], [given, np.full(DIM, np.nan, dtype=np.float32)])
    given[:] = 5
    kept = cache.lookup("m", ["a", "nan"])
    assert list(kept) == ["a"] and (kept["a"] == vector(1)).all() and not kept["a"].flags.writeable


def test_a_zero_byte_cache_keeps_nothing() -> None:
    cache = EmbeddingCache(0)
    cache.store("m", ["a"], [vector(1)])
    assert cache.lookup("m", ["a"]) == {} and cache.bytes == 0
