"""Applies document events to the index idempotently: the index as a materialized view of `documents`."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np

from schemas import DocumentEvent, document_content
from streams.ml.chunking import Chunker
from streams.state.embedding_cache import EmbeddingCache
from streams.state.encoder import Encoder
from streams.state.known_vectors import KnownVectors
from streams.state.sparse import SparseEncoder
from streams.state.store import ChunkPoint, DocumentState, VectorStore, narrowest, readers_of


def content_hash(event: DocumentEvent) -> str:
    """Hash of everything that reaches chunk payloads or vectors."""
    canonical = json.dumps([event.title, event.text, event.source], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


#: Where an index write spends its time, in order.
STAGES = ("read", "chunk", "encode", "sparse", "write", "ledger")


@dataclass
class IndexOutcome:
    """What one batch did, by document; seconds spent per stage (`STAGES`)."""

    embedded: int = 0
    chunks: int = 0
    encoded: int = 0  # chunks that went through the encoder (the rest kept the vectors they had)
    cached: int = 0  # distinct chunk texts whose vectors the process's embedding cache held
    deleted: int = 0
    unchanged: int = 0
    stale: int = 0
    replaced: int = 0  # documents whose indexed chunks were rewritten, deleted or re-stamped with other metadata
    # or acl (answers may have changed: a filter may no longer match them, a caller may no longer read them)
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages[stage] += time.perf_counter() - started

    @property
    def encode_s(self) -> float:
        return self.stages["encode"]

    @property
    def write_s(self) -> float:
        """Store time: reading the ledger, writing chunks and ledger entries."""
        return self.stages["read"] + self.stages["write"] + self.stages["ledger"]


class DocumentIndexer:
    """Turns a batch of valid document events into index writes.

    Rules: the highest version per doc wins (the first event of that version) and anything not newer than the
    ledger is ignored (duplicates,
    out-of-order, re-delivery); `delete` removes every chunk and leaves a tombstone; an unchanged content
    hash under the same model only stamps the new version; a shorter new version drops its surplus chunks.
    Writes go chunks first, ledger last, so a crash in between is repaired by re-delivery.
    """

    def __init__(self, store: VectorStore, encoder: Encoder, chunker: Chunker, sparse: SparseEncoder | None = None,
                 known: KnownVectors | None = None, reuse: bool = True, cache: EmbeddingCache | None = None,
                 weights: str | None = None) -> None:
        self.store = store
        self.encoder = encoder
        self.known = known  # vectors this model computed before (the trainer's of its candidate), by chunk text
        if cache is not None and not weights:
            raise ValueError("an embedding cache needs the digest of what makes the encoder's vectors (weights)")
        self.cache = cache  # vectors this process's encoders computed lately, by (weights, text)
        self.weights = weights or ""  # what makes this encoder's vectors: the digest of its files
        self.reuse = reuse  # keep the vectors of unchanged chunks (off: every changed document embedded whole)
        self.chunker = chunker
        # chunks get BM25 vectors in the same upsert as the dense ones, where the collection holds them
        self.sparse = sparse if sparse is not None and "sparse" in store.modes else None

    def apply(self, events: Sequence[DocumentEvent], resync: bool = False) -> IndexOutcome:
        """Apply newer versions; with `resync` (a copy from another collection's ledger) an equal version is
        re-stamped with whom both acls allow, when that is narrower (a failed write narrowed it there): a copy never
        widens who may read a version."""
        outcome = IndexOutcome()
        latest: dict[str, DocumentEvent] = {}
        for event in events:
            held = latest.get(event.doc_id)
            if held is None or event.version > held.version:  # equal version: the first one wins, as across
                latest[event.doc_id] = event                  # batches (a version is applied once)
        outcome.stale += len(events) - len(latest)
        with outcome.timing("read"):
            ledger = self.store.get_documents(list(latest))

        to_embed: list[tuple[DocumentEvent, str]] = []
        states: list[DocumentState] = []
        with outcome.timing("write"):
            for doc_id, event in latest.items():
                previous = ledger.get(doc_id)
                if resync and previous is not None and event.version == previous.version:
                    event = event.model_copy(update={"acl": narrowest(previous.acl, event.acl)})
                if previous is not None and not self._newer(event, previous, resync):
                    outcome.stale += 1
                elif event.op == "delete":
                    self.store.delete_chunks(doc_id)  # the tombstone keeps the acl: who may learn of the delete
                    kept = event.acl if event.acl is not None else previous.acl if previous is not None else None
                    writer = event.source if event.source is not None else previous.source if previous else None
                    states.append(DocumentState(doc_id, event.version, deleted=True, source=writer,
                                                acl=None if kept is None else list(kept)))
                    outcome.deleted += 1
                    outcome.replaced += 1
                else:
                    digest = content_hash(event)
                    if (previous is not None and not previous.deleted and previous.content_hash == digest
                            and previous.model_version == self.encoder.version):
                        self.store.set_chunk_version(doc_id, event.version, event.metadata, event.acl)
                        states.append(self._state(event, digest, previous.chunks))
                        outcome.unchanged += 1
                        outcome.replaced += (dict(previous.metadata) != dict(event.metadata)
                                             or readers_of(previous.acl) != readers_of(event.acl))
                    else:
                        to_embed.append((event, digest))
                        outcome.replaced += previous is not None and not previous.deleted

        if to_embed:
            with outcome.timing("chunk"):
                split = self.chunker.split_many([event.content for event, _ in to_embed])
                texts = [chunk.text for chunks in split for chunk in chunks]
            with outcome.timing("read"):
                kept = self._embedded_before([event.doc_id for event, _ in to_embed], ledger) if self.reuse else {}
            with outcome.timing("encode"):
                vectors, outcome.encoded, outcome.cached = self._vectors(texts, kept)
            with outcome.timing("sparse"):
                lexical = self.sparse.embed_documents(texts) if self.sparse is not None else [None] * len(texts)
            with outcome.timing("write"):
                points, row = [], 0
                for (event, digest), chunks in zip(to_embed, split, strict=True):
                    for chunk in chunks:
                        points.append(ChunkPoint(event.doc_id, chunk.number, chunk.text, event.version, digest,
                                                 self.encoder.version, vectors[row], event.source, event.title,
                                                 lexical[row], event.metadata, event.acl))
                        row += 1
                    states.append(self._state(event, digest, len(chunks)))
                for (event, _), chunks in zip(to_embed, split, strict=True):  # first: old chunks keep the old acl
                    self.store.delete_chunks(event.doc_id, from_chunk=len(chunks))
                self.store.upsert_chunks(points)
            outcome.embedded += len(to_embed)
            outcome.chunks += len(points)

        with outcome.timing("ledger"):
            self.store.put_documents(states)
        return outcome

    def restore(self, doc_id: str, failed: DocumentEvent | None = None) -> None:
        """Make the document's chunks what its ledger entry says again (after a write of it failed half-way): the
        ledger's text re-embedded, or no chunks when it is deleted or was never indexed. When the `failed` event is
        newer than the ledger, they are readable only by whom both acls allow (by nobody for a failed delete): a
        revocation in an event that could not be applied still holds."""
        state = self.store.get_documents([doc_id]).get(doc_id)
        if state is None or state.deleted:
            self.store.delete_chunks(doc_id)
            return
        narrowing = failed if failed is not None and failed.version > state.version else None
        if narrowing is not None:  # a failed delete leaves its document to nobody
            state = replace(state, acl=[] if narrowing.op == "delete" else narrowest(state.acl, narrowing.acl))
            self.store.set_chunk_version(doc_id, state.version, acl=state.acl)  # first, needing no encoder
        chunks = self.chunker.split(document_content(state.title, state.text))
        texts = [chunk.text for chunk in chunks]
        kept = {c.text: c.vector for c in self.store.chunks(doc_id, with_vectors=True)  # whatever the failed write
                if c.vector is not None and c.model_version == self.encoder.version}  # left of this model's
        vectors, _, _ = self._vectors(texts, kept)
        lexical = self.sparse.embed_documents(texts) if self.sparse is not None else [None] * len(texts)
        self.store.delete_chunks(doc_id, from_chunk=len(chunks))
        self.store.upsert_chunks([ChunkPoint(doc_id, chunk.number, chunk.text, state.version,
                                             state.content_hash or "", self.encoder.version, vector, state.source,
                                             state.title, terms, state.metadata, state.acl)
                                  for chunk, vector, terms in zip(chunks, vectors, lexical, strict=True)])
        if narrowing is not None:
            self.store.put_documents([state])  # last, as in `apply`: the next event compares its acl with this one

    def _vectors(self, texts: Sequence[str], kept: dict[str, np.ndarray]) -> tuple[list[np.ndarray], int, int]:
        """The vector of each text: the one it already has (`kept`, then the process's cache, then the version's
        known vectors), else from the encoder, each distinct text once; how many went through the encoder, and how
        many the cache held."""
        fresh = [text for text in dict.fromkeys(texts) if text not in kept]
        cached: dict[str, np.ndarray] = {}
        if self.cache is not None and fresh:
            cached = self.cache.lookup(self.weights, fresh)
            kept = {**kept, **cached}
            fresh = [text for text in fresh if text not in kept]
        if self.known is not None and fresh:
            kept = {**kept, **self.known.lookup(fresh)}
            fresh = [text for text in fresh if text not in kept]
        encoded = self.encoder.encode(fresh) if fresh else np.zeros((0, self.encoder.dim), np.float32)
        by_text = {**kept, **dict(zip(fresh, encoded, strict=True))}
        vectors = [by_text[text] for text in texts]
        if not all(np.isfinite(vector).all() for vector in vectors):
            raise ValueError("non-finite vectors (the encoder's, or kept ones); nothing of this batch was written")
        if self.cache is not None and fresh:
            self.cache.store(self.weights, fresh, encoded)
        return vectors, len(fresh), len(cached)

    def _embedded_before(self, doc_ids: Sequence[str], ledger: Mapping[str, DocumentState]) -> dict[str, np.ndarray]:
        """Chunk text -> the dense vector this model gave it, from the chunks of these documents that are indexed
        now: an edit re-embeds only the chunks whose text changed (a chunk's text is all its vector depends on)."""
        kept: dict[str, np.ndarray] = {}
        for doc_id in doc_ids:
            previous = ledger.get(doc_id)
            if (previous is None or previous.deleted or previous.model_version != self.encoder.version
                    or previous.chunks < 2):  # a one-chunk document's edit changed its only chunk: nothing to keep
                continue
            for chunk in self.store.chunks(doc_id, with_vectors=True):
                if chunk.vector is not None and chunk.model_version == self.encoder.version:
                    kept.setdefault(chunk.text, chunk.vector)
        return kept

    @staticmethod
    def _newer(event: DocumentEvent, previous: DocumentState, resync: bool) -> bool:
        """Whether `event` changes what `previous` says: a newer version, or in a `resync` the same version with
        another acl."""
        return event.version > previous.version or (resync and event.version == previous.version
                                                    and readers_of(previous.acl) != readers_of(event.acl))

    def _state(self, event: DocumentEvent, digest: str, chunks: int) -> DocumentState:
        return DocumentState(
            event.doc_id, event.version, deleted=False, content_hash=digest, chunks=chunks, text=event.text,
            title=event.title, source=event.source, metadata=dict(event.metadata),
            model_version=self.encoder.version, acl=None if event.acl is None else list(event.acl),
        )
