"""The trainer's held-out evaluation, ranked the way serving ranks: the serving index's chunks (their vectors as
the index holds them), best chunk per document, the serving retrieval mode and fusion, through the same
`Searcher`. The candidate embeds the index's chunk texts once, with its ONNX export.

The worker writes the index snapshot and the ranking settings into the job directory (`write_snapshot`); the
training child reads them (`read_snapshot`) and never opens the serving collection itself.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from streams.ml.ranking import mrr_at, ndcg_at
from streams.ml.search import Searcher, SearchRequest
from streams.settings import Settings
from streams.state.edge_store import EdgeVectorStore
from streams.state.encoder import Encoder, OnnxEncoder
from streams.state.registry import ModelVersion
from streams.state.sparse import Bm25Encoder, Bm25Parameters
from streams.state.store import INTERNAL, ChunkPoint, Fusion, Mode, SearchHit

SNAPSHOT_ROWS = "index.jsonl"  # doc_id, chunk, text, source of each chunk, in the order of the vectors
SNAPSHOT_VECTORS = "index.npy"  # the serving model's vectors, as the index holds them
EVAL_BATCH = 64  # queries searched per `search_many`
EMBED_SLICE = 256  # chunk texts per candidate encoder call (progress is reported between slices)

Judged = Mapping[str, tuple[str, dict[str, int]]]  # query_id -> (query text, {doc_id: relevance})
Advance = Callable[[int], None]


@dataclass(frozen=True)
class Ranking:
    """How serving ranks, as resolved for the serving collection (dense where it has no sparse vectors)."""

    mode: Mode = "hybrid"
    fusion: Fusion = "rrf"
    candidates: int = 100
    rrf_k: int = 60
    group_candidates: int = 4
    bm25: Bm25Parameters = field(default_factory=Bm25Parameters)
    threads: int = 2  # ONNX Runtime threads of the candidate's encoder
    batch_size: int = 32
    batch_tokens: int = 1024
    exact_first: bool = True

    @classmethod
    def of(cls, settings: Settings, modes: frozenset[str]) -> Ranking:
        """Serving's ranking over a collection answering `modes` (dense where it has no sparse vectors, as
        `Searcher.mode_of` answers)."""
        s = settings
        return cls(s.search_mode if s.search_mode in modes else "dense", s.search_fusion, s.search_candidates,
                   s.rrf_k, s.group_candidates, Bm25Parameters(s.bm25_k1, s.bm25_b, s.bm25_avg_len), s.onnx_threads,
                   s.encode_batch_size, s.encode_batch_tokens, s.search_exact_first)

    def encoder(self, model: ModelVersion) -> OnnxEncoder:
        """An ONNX Runtime encoder of `model` with serving's threads and batch bounds."""
        return OnnxEncoder(model, threads=self.threads, batch_size=self.batch_size, batch_tokens=self.batch_tokens)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Ranking:
        return cls(**{**data, "bm25": Bm25Parameters(**data["bm25"])})  # type: ignore[arg-type]


def write_snapshot(job_dir: Path, chunks: Sequence[ChunkPoint]) -> int:
    """Write the serving index's chunks with their vectors (skipping any read back without one)."""
    kept = [c for c in chunks if c.vector is not None]
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / SNAPSHOT_ROWS, "w", encoding="utf-8") as rows:
        for c in kept:
            rows.write(json.dumps([c.doc_id, c.chunk, c.text, c.source]) + "\n")
    dim = len(kept[0].vector) if kept else 0  # type: ignore[arg-type]
    vectors = np.stack([c.vector for c in kept]).astype(np.float32) if kept else np.zeros((0, dim), np.float32)
    np.save(job_dir / SNAPSHOT_VECTORS, vectors)
    return len(kept)


def read_snapshot(job_dir: Path) -> list[ChunkPoint]:
    vectors = np.load(job_dir / SNAPSHOT_VECTORS)
    with open(job_dir / SNAPSHOT_ROWS, encoding="utf-8") as rows:
        fields = [json.loads(line) for line in rows]
    return [ChunkPoint(doc_id, chunk, text, 1, "", "serving", vectors[i], source)
            for i, (doc_id, chunk, text, source) in enumerate(fields)]


def embed_chunks(encoder: Encoder, chunks: Sequence[ChunkPoint], advance: Advance) -> np.ndarray:
    """`encoder`'s vectors of the chunks' texts, in their order: texts sorted by length (little padding) and
    encoded one slice at a time."""
    order = sorted(range(len(chunks)), key=lambda i: len(chunks[i].text))
    vectors = np.empty((len(chunks), encoder.dim), dtype=np.float32)
    for start in range(0, len(order), EMBED_SLICE):
        rows = order[start:start + EMBED_SLICE]
        vectors[rows] = encoder.encode([chunks[i].text for i in rows])
        advance(len(rows))
    return vectors


class HeldOutIndex:
    """The snapshot of the serving index in a collection of the job's own, searched like serving searches it.

    BM25 weights are computed once and kept for every model's collection (they do not depend on the model)."""

    def __init__(self, work_dir: Path, chunks: Sequence[ChunkPoint], ranking: Ranking) -> None:
        self.work_dir = work_dir
        self.ranking = ranking
        self.sparse = Bm25Encoder(ranking.bm25) if ranking.mode != "dense" else None
        if self.sparse is not None:
            terms = self.sparse.embed_documents([c.text for c in chunks])
            chunks = [replace(c, sparse=t) for c, t in zip(chunks, terms, strict=True)]
        self.chunks = list(chunks)

    def rank(self, encoder: Encoder, judged: Judged, advance: Advance, vectors: np.ndarray | None = None,
             limit: int = 10) -> dict[str, list[SearchHit]]:
        """Top `limit` documents (best chunk each) per held-out query, answered by a `Searcher` of `encoder` over
        the chunks (`vectors`: `encoder`'s vectors of them, row by row; the snapshot's own by default)."""
        if not judged or not self.chunks:
            advance(len(judged))
            return {q: [] for q in judged}
        points = self.chunks if vectors is None else [replace(c, vector=vectors[i], model_version=encoder.version)
                                                       for i, c in enumerate(self.chunks)]
        path = self.work_dir / f"index-{encoder.version}"
        store = EdgeVectorStore(path, "held-out", encoder.dim, sparse=self.sparse is not None)
        try:
            for start in range(0, len(points), 1024):
                store.upsert_chunks(points[start:start + 1024])
            r = self.ranking
            searcher = Searcher(encoder, store, cache_size=0, sparse=self.sparse, default_mode=r.mode,
                                fusion=r.fusion, candidates=r.candidates, rrf_k=r.rrf_k,
                                group_candidates=r.group_candidates, exact_first=r.exact_first)
            query_ids = list(judged)
            rankings: dict[str, list[SearchHit]] = {}
            for start in range(0, len(query_ids), EVAL_BATCH):
                batch = query_ids[start:start + EVAL_BATCH]
                results = searcher.search_many([SearchRequest(judged[q][0], limit, group="doc",
                                                                     access=INTERNAL) for q in batch])
                rankings.update({q: result.hits for q, result in zip(batch, results, strict=True)})
                advance(len(batch))
            return rankings
        finally:
            store.close()
            shutil.rmtree(path, ignore_errors=True)


def rank_metrics(rankings: Mapping[str, Sequence[SearchHit]], judged: Judged) -> dict[str, float]:
    """Mean nDCG@10 and MRR@10 over the held-out queries."""
    if not judged:
        return {"nDCG@10": 0.0, "MRR@10": 0.0}
    ranked = {q: [hit.doc_id for hit in rankings.get(q, [])] for q in judged}
    n = len(judged)
    return {"nDCG@10": sum(ndcg_at(ranked[q], judged[q][1], 10) for q in judged) / n,
            "MRR@10": sum(mrr_at(ranked[q], judged[q][1], 10) for q in judged) / n}
