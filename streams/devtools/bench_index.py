"""The benchmarks' search index: real documents indexed as ingest does, plus filler chunks up to a size, each
labelled with the metadata and acl a `Label` draws (`gristmill bench query`, its access phases)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from schemas import DocumentEvent
from streams.ml.chunking import Chunker
from streams.ml.indexer import DocumentIndexer
from streams.ml.serving import bm25
from streams.settings import Settings
from streams.state.edge_store import EdgeVectorStore
from streams.state.encoder import OnnxEncoder
from streams.state.store import ChunkPoint

#: A document's or filler chunk's metadata and acl (None: public), drawn per document or chunk.
Label = Callable[[], tuple[dict[str, Any], list[str] | None]]


def unlabelled() -> tuple[dict[str, Any], list[str] | None]:
    return {}, None


def build_index(store: EdgeVectorStore, encoder: OnnxEncoder, settings: Settings, chunks: int,
                real_docs: list[str], vocabulary: list[str], label: Label = unlabelled) -> list[ChunkPoint]:
    """Real documents indexed as ingest indexes them, plus filler up to `chunks` points: random unit vectors and
    texts of random corpus words with their BM25 vectors (search cost depends on the count, not the content); each
    document and filler chunk with the metadata and acl `label` draws. Returns the points with their vectors up to
    20,000 chunks (none above)."""
    sparse = bm25(settings)
    chunker = Chunker(encoder.tokenizer, settings.chunk_tokens, settings.chunk_overlap, encoder.max_tokens,
                      settings.chunk_boundary_every)
    DocumentIndexer(store, encoder, chunker, sparse).apply(
        [DocumentEvent(doc_id=f"real-{i}", version=1, op="upsert", text=t, metadata=metadata, acl=acl)
         for i, t in enumerate(real_docs) for metadata, acl in [label()]])
    rng = np.random.default_rng(5)
    filler_count = max(0, chunks - store.count_chunks())
    vectors = rng.normal(size=(filler_count, encoder.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for start in range(0, filler_count, 2_000):
        texts = [" ".join(rng.choice(vocabulary, 60)) for _ in range(start, min(filler_count, start + 2_000))]
        store.upsert_chunks([ChunkPoint(f"filler-{(start + j) // 4}", (start + j) % 4, text, 1, "filler",
                                        encoder.version, vectors[start + j], None, None, terms, *label())
                             for j, (text, terms) in enumerate(zip(texts, sparse.embed_documents(texts),
                                                                   strict=True))])
    return store.all_chunks(with_vectors=True) if chunks <= 20_000 else []
