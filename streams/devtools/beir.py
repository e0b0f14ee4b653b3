"""`gristmill eval BEIR_DIR`: retrieval quality of the live pipeline (through Kafka) on a BEIR-format dataset."""

from __future__ import annotations

import csv
import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from streams.ml.ranking import Qrels, documents_by_best_chunk, score_rankings
from streams.produce import Outgoing, produce
from streams.roundtrip import QueryRoundTrip
from streams.settings import Settings
from streams.topics import TopicNames


@dataclass(frozen=True)
class BeirDataset:
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]
    qrels: Qrels  # query id -> doc id -> grade


def load_beir(folder: Path, split: str = "test") -> BeirDataset:
    """Read `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv`; only queries with judgements are kept."""
    for needed in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / needed).is_file():
            raise FileNotFoundError(f"{folder / needed} is missing: not a BEIR-format folder")
    corpus: dict[str, tuple[str, str]] = {}
    with (folder / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                corpus[str(row["_id"])] = (row.get("title") or "", row.get("text") or "")
    qrels: Qrels = {}
    with (folder / f"qrels/{split}.tsv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            qrels.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    queries: dict[str, str] = {}
    with (folder / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                if str(row["_id"]) in qrels:
                    queries[str(row["_id"])] = row["text"]
    return BeirDataset(corpus, queries, {q: qrels[q] for q in queries})


def _post_json(url: str, body: object, api_key: SecretStr | None = None) -> dict[str, object]:
    """POST a JSON body (with `api_key` as the bearer token when given); the JSON answer."""
    headers = {"Content-Type": "application/json",
               **({"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key is not None else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def ingest_corpus(settings: Settings, http_url: str, dataset: BeirDataset, timeout_s: float = 3600,
                  on_sent: Callable[[int], None] | None = None) -> float:
    """Produce the corpus (title and text as one document) and wait until every document is indexed."""
    version = int(time.time() * 1000)
    records = (Outgoing(doc_id.encode(), json.dumps({
        "doc_id": doc_id, "version": version, "op": "upsert", "text": text or title, "source": "beir",
        **({"title": title} if title else {})}).encode()) for doc_id, (title, text) in dataset.corpus.items())
    started = time.monotonic()
    produce(settings, TopicNames(settings.namespace).documents, records, on_sent).check()
    pending = list(dataset.corpus)
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} documents not indexed after {timeout_s}s")
        still = []
        for start in range(0, len(pending), 5_000):
            batch = pending[start:start + 5_000]
            versions = _post_json(f"{http_url}/documents/versions", {"doc_ids": batch}, settings.api_key)["versions"]
            still += [d for d in batch if (versions.get(d) or -1) < version]  # type: ignore[union-attr, operator]
        pending = still
        if pending:
            time.sleep(0.5)
    return time.monotonic() - started


@dataclass(frozen=True)
class PipelineRun:
    scores: dict[str, float]
    round_trip_ms: list[float]
    server_ms: list[float]


def query_pipeline(settings: Settings, dataset: BeirDataset, top_k: int = 100, window: int = 8,
                   timeout_s: float = 600, mode: str | None = None, group: str = "doc") -> PipelineRun:
    """Send every judged query through `queries` (at most `window` in flight, in `mode`, document-level by default)
    and score the responses."""
    run_id = f"eval-{mode or 'default'}-{group}-{int(time.time())}"
    answers = {}
    with QueryRoundTrip(settings) as roundtrip:
        ids = list(dataset.queries)
        for start in range(0, len(ids), window):
            sent = {roundtrip.send(dataset.queries[q], top_k, query_id=f"{run_id}-{q}", mode=mode, group=group): q
                    for q in ids[start:start + window]}
            for query_id, answer in roundtrip.wait(sent, timeout_s).items():
                answers[sent[query_id]] = answer
    rankings = {q: documents_by_best_chunk(a.response["hits"]) for q, a in answers.items()}
    return PipelineRun(score_rankings(rankings, dataset.qrels), [a.round_trip_s * 1000 for a in answers.values()],
                       [float(a.response["latency_ms"]) for a in answers.values()])


def reference_scores(model_source: str, dataset: BeirDataset) -> dict[str, float]:
    """Plain sentence-transformers, exact cosine search over whole documents (the `[train]` extra)."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_source, device="cpu")
    doc_ids = list(dataset.corpus)
    docs = model.encode([f"{title} {text}".strip() for title, text in dataset.corpus.values()], batch_size=32,
                        normalize_embeddings=True, convert_to_numpy=True)
    query_ids = list(dataset.queries)
    queries = model.encode([dataset.queries[q] for q in query_ids], batch_size=32, normalize_embeddings=True,
                           convert_to_numpy=True)
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1)[:, :100]
    return score_rankings({q: [doc_ids[j] for j in top[i]] for i, q in enumerate(query_ids)}, dataset.qrels)
