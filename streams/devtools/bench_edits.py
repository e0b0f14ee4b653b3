"""`gristmill bench ingest --edits`: what an edit costs beside what the first ingest of the same documents cost.

Documents of about 1,500 words in sentences from the bundled corpus are indexed (the first ingest, the baseline),
then each gets a one-sentence edit in its middle (a sentence replaced by another of its own length ±30%), through
the indexer the ingest agent writes with, in micro-batches as it does: documents per second of each phase, chunks
that went through the encoder per document, and the ratio of the two rates; beside it, the same edits on a second
index with chunk reuse off (every edited document embedded whole: what an edit cost before). The encoder is warmed
up first, so neither phase pays for its first runs.
"""

from __future__ import annotations

import json
import random
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from schemas import DocumentEvent
from streams.devtools.bench_ingest import Row, print_rows
from streams.devtools.demo import CORPUS
from streams.ml.chunking import Chunker
from streams.ml.indexer import DocumentIndexer
from streams.ml.serving import bm25, open_encoder, open_registry
from streams.settings import Settings
from streams.state.edge_store import EdgeVectorStore
from streams.state.registry import ensure_base_model

BATCH = 8  # documents per index write, as the ingest agent's micro-batches hold a few at a time


def corpus_sentences() -> list[str]:
    text = " ".join(json.loads(line)["text"] for line in CORPUS.read_text(encoding="utf-8").splitlines())
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if 6 <= len(s.split()) <= 40]


def long_documents(count: int, words: int, seed: int = 5) -> list[list[str]]:
    """`count` documents of about `words` words, each a list of sentences."""
    rng = random.Random(seed)
    sentences = corpus_sentences()
    documents = []
    for _ in range(count):
        doc: list[str] = []
        while sum(len(s.split()) for s in doc) < words:
            doc.append(rng.choice(sentences))
        documents.append(doc)
    return documents


def edited(doc: Sequence[str], rng: random.Random, pool: Sequence[str]) -> list[str]:
    """The document with its middle sentence replaced by another of about its length."""
    middle = len(doc) // 2
    length = len(doc[middle].split())
    close = [s for s in pool if abs(len(s.split()) - length) <= max(2, length * 0.3) and s != doc[middle]]
    return [*doc[:middle], rng.choice(close), *doc[middle + 1:]]


def timed_apply(indexer: DocumentIndexer, events: Sequence[DocumentEvent]) -> tuple[float, int, int]:
    """Seconds, chunks written and chunks encoded for `events`, applied in micro-batches."""
    started, chunks, encoded = time.perf_counter(), 0, 0
    for start in range(0, len(events), BATCH):
        outcome = indexer.apply(events[start:start + BATCH])
        chunks += outcome.chunks
        encoded += outcome.encoded
    return time.perf_counter() - started, chunks, encoded


def run_edit_bench(settings: Settings, documents: int, words: int, console: Console) -> list[Row]:
    model = ensure_base_model(open_registry(settings))
    encoder = open_encoder(settings, model)
    chunker = Chunker(encoder.tokenizer, settings.chunk_tokens, settings.chunk_overlap, encoder.max_tokens,
                      settings.chunk_boundary_every)
    docs = long_documents(documents, words)
    rng, pool = random.Random(9), corpus_sentences()
    first = [DocumentEvent(doc_id=f"doc-{i}", version=1, op="upsert", text=" ".join(doc)) for i, doc in enumerate(docs)]
    edits = [DocumentEvent(doc_id=f"doc-{i}", version=2, op="upsert", text=" ".join(edited(doc, rng, pool)))
             for i, doc in enumerate(docs)]
    encoder.encode([" ".join(docs[0])[:2000]] * 16)  # warm-up
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-edits-") as tmp:
        store = EdgeVectorStore(Path(tmp) / "qdrant", "edits", encoder.dim)
        whole = EdgeVectorStore(Path(tmp) / "qdrant-whole", "edits", encoder.dim)
        try:
            indexer = DocumentIndexer(store, encoder, chunker, bm25(settings))
            console.print(f"first ingest of {documents} documents of ~{words} words...")
            first_s, first_chunks, first_encoded = timed_apply(indexer, first)
            console.print(f"{first_chunks} chunks; a one-sentence edit in the middle of each...")
            edit_s, edit_chunks, edit_encoded = timed_apply(indexer, edits)
            console.print("the same on an index with chunk reuse off...")
            without = DocumentIndexer(whole, encoder, chunker, bm25(settings), reuse=False)
            timed_apply(without, first)
            whole_s, _, whole_encoded = timed_apply(without, edits)
        finally:
            store.close()
            whole.close()
    first_rate, edit_rate, whole_rate = documents / first_s, documents / edit_s, documents / whole_s
    per_edit = edit_encoded / documents
    rows = [
        Row("first ingest", f"{first_rate:.2f} docs/s ({first_s:.1f} s)", "",
            None, "", None),
        Row("chunks embedded per document, first ingest", f"{first_encoded / documents:.1f}",
            f"{first_chunks / documents:.1f} written"),
        Row("one-sentence edit burst", f"{edit_rate:.2f} docs/s ({edit_s:.1f} s)", f"{first_rate:.2f} docs/s",
            edit_rate / first_rate, ">= 4x", edit_rate / first_rate >= 4),
        Row("chunks embedded per one-sentence edit", f"{per_edit:.1f}", f"{edit_chunks / documents:.1f} written",
            None, "<= 3", per_edit <= 3),
        Row("edit burst, chunk reuse vs off", f"{edit_rate:.2f} docs/s", f"{whole_rate:.2f} docs/s "
            f"({whole_encoded / documents:.1f} chunks embedded per edit)", edit_rate / whole_rate),
    ]
    print_rows("gristmill bench ingest --edits", rows, console)
    return rows
