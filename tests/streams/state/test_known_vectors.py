"""Vectors a version computed before, looked up by chunk text."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streams.state.known_vectors import KEYS_FILE, VECTORS_FILE, KnownVectors, write_known_vectors


def test_written_vectors_are_found_by_text_and_nothing_else(tmp_path: Path) -> None:
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert write_known_vectors(tmp_path, ["a", "b", "a", "c"], vectors) == 3  # one row per text
    known = KnownVectors.of(tmp_path)
    assert known is not None and len(known) == 3 and known.dim == 3
    found = known.lookup(["c", "missing", "a", "b"])
    assert set(found) == {"a", "b", "c"}
    assert found["a"].tolist() == [0, 1, 2] and found["b"].tolist() == [3, 4, 5] and found["c"].tolist() == [9, 10, 11]
    assert known.lookup([]) == {}


def test_a_folder_without_them_or_with_broken_ones_has_none(tmp_path: Path) -> None:
    assert KnownVectors.of(tmp_path) is None
    write_known_vectors(tmp_path, ["a", "b"], np.ones((2, 3), np.float32))
    np.save(tmp_path / KEYS_FILE, np.array([b"x" * 32], dtype="S32"))  # one key for two vectors
    assert KnownVectors.of(tmp_path) is None


def test_vectors_of_another_kind_of_encoder_are_not_used(tmp_path: Path) -> None:
    write_known_vectors(tmp_path, ["a"], np.ones((1, 3), np.float32))  # the trainer's: not quantized
    assert KnownVectors.of(tmp_path) is not None and KnownVectors.of(tmp_path, int8=True) is None


def test_non_finite_rows_are_left_out_and_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    vectors = np.array([[1, 2, 3], [np.nan, 0, 0]], dtype=np.float32)
    assert write_known_vectors(tmp_path, ["good", "bad"], vectors) == 1
    assert set(KnownVectors.of(tmp_path).lookup(["good", "bad"])) == {"good"}  # type: ignore[union-attr]
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / VECTORS_FILE).mkdir()  # np.save cannot write there
    assert write_known_vectors(blocked, ["a"], np.ones((1, 3), np.float32)) == 0
    assert list(p.name for p in blocked.iterdir()) == [VECTORS_FILE] and KnownVectors.of(blocked) is None
