"""The trainer's held-out evaluation ranks the way serving ranks: the same documents, in the same order, as a
document-level search of the serving index, in every retrieval mode; the candidate's vectors of the index's chunk
texts are what the indexer would write."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from schemas import DocumentEvent
from streams.devtools.demo import CORPUS
from streams.ml.chunking import Chunker
from streams.ml.held_out import HeldOutIndex, Ranking, embed_chunks, rank_metrics, read_snapshot, write_snapshot
from streams.ml.indexer import DocumentIndexer
from streams.ml.search import Searcher, SearchRequest
from streams.ml.training import PROGRESS_FILE, ProgressWriter, TrainingProgress
from streams.settings import Settings
from streams.state.edge_store import EdgeVectorStore
from streams.state.encoder import OnnxEncoder
from streams.state.sparse import Bm25Encoder, Bm25Parameters
from streams.state.store import SearchHit


def distinct_documents(count: int) -> list[dict[str, str]]:
    """Reference pages of the bundled corpus that share no paragraph with another (some pages repeat others,
    and the engine orders exactly tied chunks either way)."""
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    seen: dict[str, int] = {}
    for row in rows:
        for paragraph in {p.strip() for p in row["text"].split("\n\n") if len(p.strip()) > 40}:
            seen[paragraph] = seen.get(paragraph, 0) + 1
    unique = [r for r in rows if all(seen.get(p.strip(), 0) <= 1 for p in r["text"].split("\n\n"))]
    return unique[:count]


ROWS = distinct_documents(24)
JUDGED = {f"q{i}": (f"what does this say: {' '.join(row['text'].split()[:12]).lower()}", {row["doc_id"]: 1})
          for i, row in enumerate(ROWS[:20])}
BM25 = Bm25Parameters(1.2, 0.75, 90.0)


@pytest.fixture(scope="module")
def serving_index(tmp_path_factory: pytest.TempPathFactory, encoder: OnnxEncoder) -> Iterator[EdgeVectorStore]:
    """A serving collection as ingest builds it: short chunks (several per product), dense and BM25 vectors."""
    store = EdgeVectorStore(tmp_path_factory.mktemp("serving") / "q", "chunks", encoder.dim)
    DocumentIndexer(store, encoder, Chunker(encoder.tokenizer, 64, 8, encoder.max_tokens), Bm25Encoder(BM25)).apply(
        [DocumentEvent(doc_id=r["doc_id"], version=1, op="upsert", text=r["text"], title=r.get("title"))
         for r in ROWS])
    yield store
    store.close()


def served(searcher: Searcher, mode: str) -> dict[str, list[SearchHit]]:
    results = searcher.search_many([SearchRequest(text, 10, mode=mode, group="doc")  # type: ignore[arg-type]
                                    for text, _ in JUDGED.values()])
    return {q: r.hits for q, r in zip(JUDGED, results, strict=True)}


def tied(rankings: dict[str, list[SearchHit]]) -> dict[str, list[frozenset[str]]]:
    """Each ranking as its levels of (nearly) equal scores, each with its documents; the engine orders tied
    documents either way, and may cut the last level anywhere, so that one is kept empty."""
    out = {}
    for query, hits in rankings.items():
        levels: list[tuple[float, set[str]]] = []
        for hit in hits:
            if levels and math.isclose(hit.score, levels[-1][0], rel_tol=1e-4):
                levels[-1][1].add(hit.doc_id)
            else:
                levels.append((hit.score, {hit.doc_id}))
        out[query] = [frozenset(docs) for _, docs in levels[:-1]] + [frozenset()] * bool(levels)
    return out


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_held_out_rankings_are_the_served_document_rankings(mode: str, tmp_path: Path, encoder: OnnxEncoder,
                                                            serving_index: EdgeVectorStore) -> None:
    chunks = serving_index.all_chunks(with_vectors=True)
    assert len(chunks) > 2 * len(ROWS)  # several chunks per document: best chunk per document matters
    write_snapshot(tmp_path / "job", chunks)
    ranking = Ranking.of(Settings(search_mode=mode, bm25_avg_len=BM25.avg_len), serving_index.modes)  # type: ignore[arg-type]
    index = HeldOutIndex(tmp_path / "held-out", read_snapshot(tmp_path / "job"), ranking)
    searched: list[int] = []
    rankings = index.rank(encoder, JUDGED, searched.append)
    assert sum(searched) == len(JUDGED)
    serving = served(Searcher(encoder, serving_index, cache_size=0, sparse=Bm25Encoder(BM25),
                              default_mode=mode), mode)  # type: ignore[arg-type]
    assert all(len({h.doc_id for h in r}) == len(r) <= 10 for r in rankings.values())  # documents, not chunks
    # the engine orders tied chunks either way (and a lexical tie moves fused scores a little): the same
    # documents, and the same measures the gate decides on
    overlap = [len({h.doc_id for h in rankings[q]} & {h.doc_id for h in serving[q]}) / max(1, len(serving[q]))
               for q in JUDGED]
    assert sum(overlap) / len(overlap) > 0.95, overlap
    ours, theirs = rank_metrics(rankings, JUDGED), rank_metrics(serving, JUDGED)
    assert ours == pytest.approx(theirs, abs=0.01) and theirs["nDCG@10"] > 0.5, (ours, theirs)


def test_the_candidate_embeds_the_chunk_texts_as_the_indexer_did(tmp_path: Path, encoder: OnnxEncoder,
                                                                 serving_index: EdgeVectorStore) -> None:
    chunks = serving_index.all_chunks(with_vectors=True)
    embedded: list[int] = []
    vectors = embed_chunks(encoder, chunks, embedded.append)
    assert sum(embedded) == len(chunks)
    indexed = np.stack([c.vector for c in chunks])  # type: ignore[misc]
    np.testing.assert_allclose(vectors, indexed, atol=1e-5)
    index = HeldOutIndex(tmp_path, chunks, Ranking.of(Settings(search_mode="dense"), serving_index.modes))
    def ranked(vectors: np.ndarray | None = None) -> dict[str, list[frozenset[str]]]:
        return tied(index.rank(encoder, JUDGED, lambda n: None, vectors))

    assert ranked(indexed) == ranked()
    assert ranked(indexed[::-1].copy()) != ranked()  # the vectors passed in are the ones searched


def test_a_dense_only_collection_is_evaluated_dense() -> None:
    assert Ranking.of(Settings(search_mode="hybrid"), frozenset({"dense"})).mode == "dense"
    ranking = Ranking.of(Settings(search_mode="sparse", rrf_k=20, bm25_k1=1.5), frozenset({"dense", "sparse",
                                                                                         "hybrid"}))
    assert (ranking.mode, ranking.rrf_k, ranking.bm25.k1) == ("sparse", 20, 1.5)
    assert Ranking.from_dict(json.loads(json.dumps(ranking.as_dict()))) == ranking


def test_an_empty_index_ranks_nothing(tmp_path: Path, encoder: OnnxEncoder) -> None:
    index = HeldOutIndex(tmp_path, [], Ranking())
    assert index.rank(encoder, JUDGED, lambda n: None) == {q: [] for q in JUDGED}
    assert rank_metrics({}, JUDGED) == {"nDCG@10": 0.0, "MRR@10": 0.0}


def test_progress_reports_phases_done_of_total_and_an_eta(tmp_path: Path) -> None:
    writer = ProgressWriter(tmp_path / PROGRESS_FILE, interval_s=0.0)
    assert TrainingProgress.read(tmp_path) is None
    writer.phase("load", 1)
    writer.advance()
    writer.phase("fine-tune", 40)
    time.sleep(0.05)
    writer.advance(10)
    seen = TrainingProgress.read(tmp_path)
    assert seen is not None and (seen.phase, seen.done, seen.total) == ("fine-tune", 10, 40)
    shown = seen.as_dict(seen.phase_started_at + 20.0)  # 10 steps in 20 s: 30 more take 60 s
    assert (shown["step"], shown["steps"], shown["unit"], shown["eta_s"]) == (4, 7, "steps", 60.0)
    assert set(seen.phase_seconds) == {"load"}
    writer.advance(100)  # never past the total
    writer.finish()
    final = TrainingProgress.read(tmp_path)
    assert final is not None and final.phase == "done" and set(final.phase_seconds) == {"load", "fine-tune"}
    assert final.phase_seconds["fine-tune"] >= 0.05 and final.as_dict(time.time())["eta_s"] is None
