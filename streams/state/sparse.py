"""Sparse (lexical) vectors: the `SparseEncoder` port and its BM25 implementation on qdrant-edge's `Bm25`.

Documents get BM25 term-frequency weights; Qdrant applies the IDF (the collection's sparse vector has the `Idf`
modifier), so the weights never go stale as the corpus changes. The same tokenizer (qdrant-edge's) embeds
documents and queries for both vector-store backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import qdrant_edge as qe


@dataclass(frozen=True, slots=True)
class Sparse:
    """A sparse vector: term ids and their weights."""

    indices: tuple[int, ...]
    values: tuple[float, ...]


class SparseEncoder(Protocol):
    """Maps texts to sparse vectors; `name` says which (and is part of the index version it builds)."""

    name: str

    def embed_documents(self, texts: Sequence[str]) -> list[Sparse]: ...

    def embed_query(self, text: str) -> Sparse: ...


@dataclass(frozen=True)
class Bm25Parameters:
    k1: float = 1.2
    b: float = 0.75
    avg_len: float = 256.0  # average document length in tokens, for length normalization
    language: str = "english"


class Bm25Encoder:
    """qdrant-edge's BM25 model (tokenizer, stemmer, stopwords), for documents and queries alike."""

    def __init__(self, parameters: Bm25Parameters | None = None) -> None:
        self.parameters = parameters or Bm25Parameters()
        p = self.parameters
        self._model = qe.Bm25(qe.Bm25Config(k=p.k1, b=p.b, avg_len=p.avg_len, language=p.language))
        self.name = f"bm25(k1={p.k1},b={p.b},avg_len={p.avg_len:g},{p.language})"

    def embed_documents(self, texts: Sequence[str]) -> list[Sparse]:
        return [_sparse(self._model.embed_document(text)) for text in texts]

    def embed_query(self, text: str) -> Sparse:
        return _sparse(self._model.embed_query(text))


def _sparse(vector: qe.SparseVector) -> Sparse:
    return Sparse(tuple(vector.indices), tuple(float(v) for v in vector.values))
