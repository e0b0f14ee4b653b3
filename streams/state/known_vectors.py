"""Vectors a model version has already computed, by chunk text: the trainer embeds every chunk of the serving index
with the candidate to evaluate it, and ships those vectors with the version (`chunk-keys.npy`, `chunk-vectors.npy`
in its registry folder), so that the rollout, or a challenger's build, embeds only the chunks that changed since.

Keys are the SHA-256 of a chunk's text, sorted; the arrays are memory-mapped, so a lookup reads only what it finds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

KEYS_FILE, VECTORS_FILE = "chunk-keys.npy", "chunk-vectors.npy"


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def write_known_vectors(folder: Path, texts: Sequence[str], vectors: np.ndarray) -> int:
    """Write `vectors` (row i is the vector of `texts[i]`) into `folder`; returns how many distinct texts."""
    keys = np.array([text_key(text) for text in texts], dtype="S32")
    unique, first = np.unique(keys, return_index=True)  # sorted, one row per text
    np.save(folder / KEYS_FILE, unique)
    np.save(folder / VECTORS_FILE, np.ascontiguousarray(vectors[first], dtype=np.float32))
    return len(unique)


class KnownVectors:
    """A version's vectors of chunk texts, looked up by text."""

    def __init__(self, folder: Path) -> None:
        self._keys = np.load(folder / KEYS_FILE, mmap_mode="r")
        self._vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")
        if len(self._keys) != len(self._vectors):
            raise ValueError(f"{folder}: {len(self._keys)} keys for {len(self._vectors)} vectors")

    @classmethod
    def of(cls, folder: Path) -> KnownVectors | None:
        """The known vectors a version's folder holds; None where it holds none (or they cannot be read)."""
        try:
            return cls(folder) if (folder / KEYS_FILE).is_file() else None
        except (OSError, ValueError):
            return None

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1]) if self._vectors.ndim == 2 else 0

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Text -> its vector, for the texts this version embedded before."""
        if not texts or not len(self._keys):
            return {}
        wanted = np.array([text_key(text) for text in texts], dtype="S32")
        rows = np.searchsorted(self._keys, wanted)
        found = {}
        for text, key, row in zip(texts, wanted, rows, strict=True):
            if row < len(self._keys) and self._keys[row] == key:
                found[text] = np.array(self._vectors[row], dtype=np.float32)
        return found
