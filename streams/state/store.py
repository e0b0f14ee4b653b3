"""The `VectorStore` port: chunk vectors plus a per-document ledger (versions, hashes, tombstones)."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from schemas import ScalarValue
from schemas.records import MAX_FILTER_VALUE_CHARS, METADATA_KEY
from streams.state.sparse import Sparse

GRISTMILL_NS = uuid.UUID("6f1f5a8e-3c1d-5b7e-9a2f-6d4c2b1e0a99")

Mode = Literal["dense", "sparse", "hybrid"]
Fusion = Literal["rrf", "dbsf"]
DENSE_ONLY: frozenset[str] = frozenset({"dense"})
ALL_MODES: frozenset[str] = frozenset({"dense", "sparse", "hybrid"})


def chunk_point_id(doc_id: str, chunk: int) -> str:
    """Deterministic point id: `uuid5(uuid5(ns, doc_id), chunk_no)`, so re-delivery overwrites."""
    return str(uuid.uuid5(uuid.uuid5(GRISTMILL_NS, doc_id), str(chunk)))


def document_point_id(doc_id: str) -> str:
    return str(uuid.uuid5(GRISTMILL_NS, doc_id))


#: The `readers` of a public document's chunks (no principal holds a space, so none can name it).
PUBLIC_READER = "* public"
#: The `readers` of chunks nobody may read (an empty acl: a failed write's narrowest guess, see `narrowest`).
NOBODY_READER = "* nobody"
READERS = "readers"  # the chunk payload field searches are restricted by (never a filter key)


def principals_list(principals: Iterable[str]) -> list[str]:
    """`principals` sorted and unique; a bare string is refused (it would read as its characters)."""
    if isinstance(principals, str | bytes):
        raise TypeError(f"principals must be a list of strings, not the string {principals[:40]!r}")
    return sorted(set(principals))


def readers_of(acl: Sequence[str] | None) -> list[str]:
    """What a chunk's `readers` holds: its document's principals, `PUBLIC_READER` when it has no acl, or
    `NOBODY_READER` when its acl is empty."""
    if acl is None:
        return [PUBLIC_READER]
    return principals_list(acl) or [NOBODY_READER]


def narrowest(acl: Sequence[str] | None, other: Sequence[str] | None) -> list[str] | None:
    """Who may read under both acls (None: public; an empty list: nobody): what a half-applied change shows."""
    if acl is None or other is None:
        return None if acl is None and other is None else principals_list(other if acl is None else acl)
    return sorted(set(principals_list(acl)) & set(principals_list(other)))


@dataclass(frozen=True, slots=True)
class Access:
    """Which documents a search may return: public ones and those whose acl names one of `principals`.
    `internal` (gristmill's own offline evaluations, never an answer to a caller) reads every document."""

    principals: frozenset[str] = frozenset()
    internal: bool = False

    @classmethod
    def of(cls, principals: Iterable[str] | None) -> Access:
        """A caller's access; None or no principals: public documents only."""
        return cls(frozenset(principals_list(principals or ())))

    def readers(self) -> tuple[str, ...] | None:
        """The `readers` values a chunk must share with this caller (None: no restriction)."""
        return None if self.internal else (PUBLIC_READER, *sorted(self.principals))

    def may_read(self, acl: Sequence[str] | None) -> bool:
        """Whether a document with `acl` is this caller's to see."""
        return self.internal or acl is None or not self.principals.isdisjoint(acl)


#: A caller without principals: public documents only (the default everywhere a caller is not known).
PUBLIC = Access()
#: gristmill's own evaluations over the whole index.
INTERNAL = Access(internal=True)


def filterable_metadata(metadata: Mapping[str, ScalarValue]) -> dict[str, ScalarValue]:
    """A document's metadata as its chunks carry it for filters: only what a filter can match (keys a filter can
    name, strings no longer than a filter value), booleans as the keywords "true"/"false" (the embedded Qdrant's
    Python binding matches a boolean as the integer 1 or 0, never a stored boolean)."""
    return {key: ("true" if value else "false") if isinstance(value, bool) else value
            for key, value in metadata.items()
            if METADATA_KEY.fullmatch(key) and not (isinstance(value, str) and len(value) > MAX_FILTER_VALUE_CHARS)}


@dataclass(frozen=True, slots=True)
class ChunkPoint:
    """One indexed chunk; `vector` is None when read back without vectors."""

    doc_id: str
    chunk: int
    text: str
    version: int
    content_hash: str
    model_version: str
    vector: np.ndarray | None = None
    source: str | None = None
    title: str | None = None
    sparse: Sparse | None = None  # BM25 weights of the chunk's text (absent in dense-only collections)
    metadata: Mapping[str, ScalarValue] = field(default_factory=dict)  # its document's (filters read it)
    acl: Sequence[str] | None = None  # its document's (None: public); searches are restricted by it

    @property
    def point_id(self) -> str:
        return chunk_point_id(self.doc_id, self.chunk)

    def payload(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id, "chunk": self.chunk, "text": self.text, "version": self.version,
            "content_hash": self.content_hash, "model_version": self.model_version,
            "source": self.source, "title": self.title, "metadata": filterable_metadata(self.metadata),
            READERS: readers_of(self.acl),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], vector: Sequence[float] | None = None) -> ChunkPoint:
        return cls(
            doc_id=payload["doc_id"], chunk=int(payload["chunk"]), text=payload["text"],
            version=int(payload["version"]), content_hash=payload["content_hash"],
            model_version=payload["model_version"], source=payload.get("source"),
            title=payload.get("title"), metadata=payload.get("metadata") or {},
            acl=acl_of(payload.get(READERS)), vector=None if vector is None else np.asarray(vector, dtype=np.float32),
        )


def acl_of(readers: Sequence[str] | None) -> tuple[str, ...] | None:
    """The acl a chunk's `readers` stand for (None: public, as chunks written before acls existed are; an empty
    tuple: nobody)."""
    if not readers or PUBLIC_READER in readers:
        return None
    return tuple(reader for reader in readers if reader != NOBODY_READER)


@dataclass(frozen=True, slots=True)
class DocumentState:
    """Ledger entry of one document: what is indexed (or that it was deleted) and at which version.

    The full text is kept so a new model can re-embed the corpus without replaying the topic.
    """

    doc_id: str
    version: int
    deleted: bool
    content_hash: str | None = None
    chunks: int = 0
    text: str | None = None
    title: str | None = None
    source: str | None = None
    metadata: dict[str, ScalarValue] = field(default_factory=dict)
    model_version: str | None = None
    indexed_at: float = 0.0
    acl: list[str] | None = None  # who may read it (None: public)

    def payload(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id, "version": self.version, "deleted": self.deleted,
            "content_hash": self.content_hash, "chunks": self.chunks, "text": self.text,
            "title": self.title, "source": self.source, "metadata": dict(self.metadata),
            "model_version": self.model_version, "indexed_at": self.indexed_at, "acl": self.acl,
            "state": "deleted" if self.deleted else "live",  # keyword: bool matches differ by backend
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> DocumentState:
        return cls(**{key: payload.get(key) for key in cls.__slots__ if key in payload})  # type: ignore[arg-type]


@dataclass(frozen=True)
class VectorQuery:
    """What to search with: the dense query vector, the sparse one, or both fused inside the store.

    `hybrid` prefetches `candidates` chunks by each and fuses the two rankings with reciprocal rank fusion
    (`rrf`, constant `rrf_k`) or distribution-based score fusion (`dbsf`)."""

    dense: np.ndarray | None = None
    sparse: Sparse | None = None
    mode: Mode = "dense"
    fusion: Fusion = "rrf"
    candidates: int = 100
    rrf_k: int = 60


@dataclass(frozen=True, slots=True)
class SearchHit:
    doc_id: str
    chunk: int
    score: float
    text: str
    source: str | None = None


class KeepAcl(enum.Enum):
    """`set_chunk_version`'s default: the chunks keep the acl they carry."""

    KEEP = "keep"


KEEP_ACL = KeepAcl.KEEP


class VectorStore(Protocol):
    """Chunk vectors and the document ledger of one index (collection)."""

    @property
    def dim(self) -> int: ...

    def upsert_chunks(self, points: Sequence[ChunkPoint]) -> None: ...

    def delete_chunks(self, doc_id: str, from_chunk: int = 0) -> None:
        """Delete the doc's chunks numbered `from_chunk` and up (all of them by default)."""
        ...

    def set_chunk_version(self, doc_id: str, version: int, metadata: Mapping[str, ScalarValue] | None = None,
                          acl: Sequence[str] | KeepAcl | None = KEEP_ACL) -> None:
        """Stamp a newer version (and the document's metadata and acl, when given) on unchanged chunks (content
        hash equal, nothing re-embedded)."""
        ...

    @property
    def modes(self) -> frozenset[str]:
        """The query modes this collection can answer: all three, or only `dense` (a collection made before
        chunks carried sparse vectors)."""
        ...

    def search(self, query: VectorQuery, limit: int, filter_: Mapping[str, object] | None = None,
               access: Access = PUBLIC) -> list[SearchHit]:
        """Chunks best first: by cosine (`dense`), BM25 (`sparse`) or both fused (`hybrid`); `filter_` is checked
        (`InvalidFilter`) and, with `access` (public documents only by default), applies inside the store to every
        mode. A mode not in `modes` is `UnsupportedSearchMode`."""
        ...

    def chunks(self, doc_id: str, with_vectors: bool = False) -> list[ChunkPoint]: ...

    def all_chunks(self, with_vectors: bool = False) -> list[ChunkPoint]:
        """Every chunk: for audits, consistency checks and copies, not the hot path."""
        ...

    def count_chunks(self) -> int: ...

    def get_documents(self, doc_ids: Sequence[str]) -> dict[str, DocumentState]: ...

    def put_documents(self, states: Sequence[DocumentState]) -> None: ...

    def count_documents(self, include_deleted: bool = False) -> int: ...

    def all_documents(self) -> list[DocumentState]:
        """The whole ledger, tombstones included: for re-embedding into another collection and training."""
        ...

    def compact(self) -> bool:
        """Reclaim the space of deleted and overwritten points; True if anything was rewritten.

        Embedded backends do this on the caller's thread (call it on the writer thread); servers optimize by
        themselves and return False.
        """
        ...

    def close(self) -> None: ...
