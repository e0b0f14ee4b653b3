"""Vectors a model version has already computed, by chunk text: the trainer embeds every chunk of the serving index
with the candidate to evaluate it, and ships those vectors with the version (`chunk-keys.npy`, `chunk-vectors.npy`
in its registry folder), so that the rollout, or a challenger's build, embeds only the chunks that changed since.

Keys are the SHA-256 of a chunk's text, sorted; the arrays are memory-mapped, so a lookup reads only what it finds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

KEYS_FILE, VECTORS_FILE, MADE_BY_FILE = "chunk-keys.npy", "chunk-vectors.npy", "chunk-vectors.json"


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def write_known_vectors(folder: Path, texts: Sequence[str], vectors: np.ndarray, *, int8: bool = False) -> int:
    """Write `vectors` (row i is the vector of `texts[i]`; non-finite rows are left out) into `folder`, with what
    made them (`int8`: the quantized encoder); returns how many distinct texts. Best effort: a failure (a full
    disk) leaves no partial files and writes nothing (0)."""
    finite = np.isfinite(vectors).all(axis=1)
    keys = np.array([text_key(text) for text, ok in zip(texts, finite, strict=True) if ok], dtype="S32")
    unique, first = np.unique(keys, return_index=True)  # sorted, one row per text
    try:
        np.save(folder / KEYS_FILE, unique)
        np.save(folder / VECTORS_FILE, np.ascontiguousarray(vectors[finite][first], dtype=np.float32))
        (folder / MADE_BY_FILE).write_text(json.dumps({"int8": int8}), encoding="utf-8")
    except OSError:
        for name in (KEYS_FILE, VECTORS_FILE, MADE_BY_FILE):
            with contextlib.suppress(OSError):
                (folder / name).unlink(missing_ok=True)
        return 0
    return len(unique)


class KnownVectors:
    """A version's vectors of chunk texts, looked up by text."""

    def __init__(self, folder: Path) -> None:
        self._keys = np.load(folder / KEYS_FILE, mmap_mode="r")
        self._vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")
        if len(self._keys) != len(self._vectors):
            raise ValueError(f"{folder}: {len(self._keys)} keys for {len(self._vectors)} vectors")

    @classmethod
    def of(cls, folder: Path, *, int8: bool = False) -> KnownVectors | None:
        """The known vectors a version's folder holds, made as the encoder that would use them encodes (`int8`);
        None where it holds none, they cannot be read, or another kind of encoder made them."""
        try:
            made_by = json.loads((folder / MADE_BY_FILE).read_text(encoding="utf-8"))
            return cls(folder) if made_by.get("int8") is int8 else None
        except (OSError, ValueError, AttributeError):
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
