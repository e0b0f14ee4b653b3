"""A process's embedding cache: chunk vectors by (the weights and kind of encoder that made them, chunk text), least
recently used first out, bounded in bytes."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from functools import cache

import numpy as np

#: What an entry costs besides its vector's data (measured with tracemalloc: the key tuple, its digest, the array
#: object and the dict's slot).
ENTRY_OVERHEAD = 320


class EmbeddingCache:
    """Vectors an encoder computed, found again by text: a chunk that comes back (boilerplate another document
    shares, a document re-written after a failed write, a reindex with the same weights) is not encoded again.

    `weights` names what made a vector (the digest of the encoder's files: an int8 model is other files): one
    never answers for another. Thread-safe; vectors are kept as read-only copies.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, bytes], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, weights: str, texts: Iterable[str]) -> dict[str, np.ndarray]:
        """Text -> vector, for those of `texts` the cache holds for `weights`."""
        found: dict[str, np.ndarray] = {}
        keyed = [(text, (weights, _digest(text))) for text in texts]
        with self._lock:
            for text, key in keyed:
                vector = self._entries.get(key)
                if vector is None:
                    self.misses += 1
                    continue
                self._entries.move_to_end(key)
                found[text] = vector
                self.hits += 1
        return found

    def store(self, weights: str, texts: Sequence[str], vectors: Iterable[np.ndarray]) -> None:
        """Keep each text's vector (finite ones only), dropping the least recently used past `max_bytes`."""
        if self.max_bytes <= 0:
            return
        entries = []
        for text, vector in zip(texts, vectors, strict=True):
            if np.isfinite(vector).all():
                kept = np.array(vector, dtype=np.float32, copy=True)
                kept.flags.writeable = False
                entries.append(((weights, _digest(text)), kept))
        with self._lock:
            for key, kept in entries:
                previous = self._entries.pop(key, None)
                if previous is not None:
                    self.bytes -= previous.nbytes + ENTRY_OVERHEAD
                self._entries[key] = kept
                self.bytes += kept.nbytes + ENTRY_OVERHEAD
            while self.bytes > self.max_bytes and self._entries:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= dropped.nbytes + ENTRY_OVERHEAD


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@cache
def process_embedding_cache(max_bytes: int) -> EmbeddingCache:
    """The one cache of this process (every pair it opens shares it; the weights' digest keeps them apart)."""
    return EmbeddingCache(max_bytes)
