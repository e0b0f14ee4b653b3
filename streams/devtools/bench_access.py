"""`gristmill bench query`'s filtered and permission-restricted searches: one qdrant-edge index of `chunks` chunks
(exact search: the embedded engine builds no HNSW graph) whose chunks carry metadata (a year, a language) and acls
over `principals` distinct principals (one in ten public, drawn independently; the real documents, every query's
nearest neighbours, restricted too), searched with no condition at all (gristmill's own evaluations; no caller gets
this), as a caller without principals (public documents only), filtered, restricted to a caller's three principals,
and both — hybrid, one query at a time, each query in every phase in a rotating order so drift hits each alike, all
in the same run. End to end (encode + search, as serving does) and the store's search alone (the same query
vectors); every search must return the k asked."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from streams.devtools.bench_index import build_index
from streams.devtools.bench_ingest import Row
from streams.ml.ranking import percentile
from streams.ml.search import Searcher, SearchRequest
from streams.ml.serving import bm25
from streams.settings import Settings
from streams.state.edge_store import EdgeVectorStore
from streams.state.encoder import OnnxEncoder
from streams.state.store import INTERNAL, PUBLIC, Access, VectorQuery

LANGUAGES = ("en", "de", "fr", "es")
#: What each phase searches with: (filter, access); the first is the baseline. The filter keeps 40% of the chunks
#: (years 2015-2024) of one language in four: 10%; the caller may read the public tenth and ~0.5% more (1,000
#: principals).
PHASES: Mapping[str, tuple[dict[str, Any] | None, Access | None]] = {
    "unrestricted": (None, INTERNAL),
    "public only": (None, PUBLIC),
    "filtered": ({"metadata.year": {"gte": 2015}, "metadata.lang": "en"}, INTERNAL),
    "restricted": (None, None),  # to the caller's principals (3 of them), made per run
    "filtered + restricted": ({"metadata.year": {"gte": 2015}, "metadata.lang": "en"}, None),
}
K = 10


def labels(principals: int, rng: np.random.Generator) -> tuple[dict[str, Any], list[str] | None]:
    """A chunk's metadata and acl, drawn independently: one chunk in ten public, the rest readable by one to three
    of `principals` users."""
    metadata = {"year": int(rng.integers(2000, 2025)), "lang": str(rng.choice(LANGUAGES))}
    if rng.random() < 0.1:
        return metadata, None
    return metadata, [f"user:{u}" for u in rng.choice(principals, int(rng.integers(1, 4)), replace=False)]


class TooFewHits(AssertionError):
    """A search returned fewer hits than asked: its phase measured less work than it claims."""


def round_robin(calls: Mapping[str, Callable[[str], int]], queries: list[str]) -> dict[str, list[float]]:
    """Each query asked in every phase, the order rotating from one query to the next (ms each, per phase);
    `TooFewHits` when a search returns fewer than `K` hits."""
    names = list(calls)
    out: dict[str, list[float]] = {name: [] for name in names}
    for i, query in enumerate(queries):
        for name in names[i % len(names):] + names[:i % len(names)]:
            started = time.perf_counter()
            hits = calls[name](query)
            out[name].append((time.perf_counter() - started) * 1000)
            if hits < K:
                raise TooFewHits(f"{name}: {hits} hits for {query!r}, {K} asked")
    return out


def access_rows(settings: Settings, encoder: OnnxEncoder, chunks: int, principals: int, queries: list[str],
                real_docs: list[str], vocabulary: list[str], console: Console) -> list[Row]:
    """Filtered and permission-restricted hybrid searches beside unrestricted ones: p50 within 1.3x, end to end and
    in the store alone."""
    caller = Access.of([f"user:{u}" for u in (0, principals // 2, principals - 1)])
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-access-") as tmp:
        console.print(f"building a {chunks:,}-chunk index with metadata and acls over {principals:,} principals...")
        store = EdgeVectorStore(Path(tmp) / "qdrant", "access", encoder.dim)
        try:
            store.index_metadata({"year": "integer", "lang": "keyword"})
            rng = np.random.default_rng(11)
            build_index(store, encoder, settings, chunks, real_docs, vocabulary, lambda: labels(principals, rng))
            searcher = Searcher(encoder, store, cache_size=0, sparse=bm25(settings), fusion=settings.search_fusion,
                                candidates=settings.search_candidates, rrf_k=settings.rrf_k,
                                exact_first=settings.search_exact_first)
            phases = {name: (filter_, access or caller) for name, (filter_, access) in PHASES.items()}

            def served(name: str) -> Callable[[str], object]:
                filter_, access = phases[name]

                return lambda query: len(searcher.search_many([SearchRequest(query, K, filter_ or {}, "hybrid",
                                                                             "chunk", access)])[0].hits)


            vectors = dict(zip(queries, encoder.encode(queries), strict=True))
            sparse = bm25(settings)
            lexical = {query: sparse.embed_query(query) for query in queries}

            def stored(name: str) -> Callable[[str], object]:
                filter_, access = phases[name]
                return lambda query: len(store.search(VectorQuery(vectors[query], lexical[query], "hybrid",
                                                                  settings.search_fusion, settings.search_candidates,
                                                                  settings.rrf_k), K, filter_, access))

            console.print("hybrid searches: unrestricted, filtered, restricted, both (round-robin)...")
            round_robin({name: served(name) for name in phases}, queries[:20])  # warm-up
            end_to_end = round_robin({name: served(name) for name in phases}, queries[:300])
            store_only = round_robin({name: stored(name) for name in phases}, queries[:300])
        finally:
            store.close()
    return rows_of(chunks, principals, end_to_end, store_only)


def rows_of(chunks: int, principals: int, end_to_end: dict[str, list[float]], store_only: dict[str, list[float]]
            ) -> list[Row]:
    base_name = next(iter(PHASES))
    rows = []
    for label, measured in (("encode + search", end_to_end), ("store search alone", store_only)):
        base = measured[base_name]
        for name, values in measured.items():
            ratio = percentile(values, 50) / percentile(base, 50)
            check = name != base_name
            rows.append(Row(f"{chunks:,} chunks (qdrant-edge), {principals:,} principals, {label}: hybrid p50 / p99, "
                            f"{name} (ms)",
                            f"{percentile(values, 50):.1f} / {percentile(values, 99):.1f}",
                            f"{percentile(base, 50):.1f}" if name != base_name else "",
                            None if name == base_name else 1 / ratio, "p50 <= 1.3x unrestricted" if check else "",
                            ratio <= 1.3 if check else None))
    return rows
