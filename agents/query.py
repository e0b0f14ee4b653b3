"""Query agent: `queries` -> validate -> embed (micro-batched) -> search -> `responses`, and the query log."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial

from schemas import Hit, QueryEvent, QueryResponse
from streams import metrics
from streams.host import AgentHost
from streams.ml.search import SearchRequest
from streams.ml.serving import ServingSlot
from streams.processing import Contract, Outbox
from streams.state.query_log import LoggedQuery, QueryLog
from streams.store_threads import StoreThreads
from streams.validation import Accepted

QUERIES = Contract("queries", QueryEvent, "query_id")


def register(worker: AgentHost) -> None:
    s, shared = worker.settings, worker.shared
    worker.batch_agent(QUERIES, "query", s.query_batch_records, s.query_batch_seconds,
                       partial(respond, serving=shared.serving, threads=shared.threads, outbox=worker.outbox,
                               query_log=shared.query_log, max_bytes=s.deadletter_max_bytes))
    worker.timer(60.0, partial(prune_log, shared.query_log, shared.threads, s.query_log_max_rows,
                               s.query_log_max_age_s))


async def respond(batch: Sequence[Accepted[QueryEvent]], *, serving: ServingSlot, threads: StoreThreads,
                  outbox: Outbox, query_log: QueryLog, max_bytes: int = 900_000) -> None:
    """Answer a batch of queries from one serving pair (one encoder call for the cache misses), produce the
    responses, then log every query with its response."""
    started = time.perf_counter()
    metrics.BATCH_RECORDS.labels("query").observe(len(batch))
    queries = [a.record for a in batch]
    requests = [SearchRequest(q.text, q.top_k, q.filter, q.mode, q.group) for q in queries]
    searcher = serving.current.searcher  # the pair, taken once for the batch
    results = await threads.read(lambda: searcher.search_many(requests), "search")
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    responses = [fit(QueryResponse(query_id=q.query_id, model_version=r.model_version, index_version=r.index_version,
                                   hits=[Hit(doc_id=h.doc_id, chunk=h.chunk, score=h.score, text=h.text)
                                         for h in r.hits], latency_ms=latency_ms, cached=r.cached, mode=r.mode,
                                   group=r.group), max_bytes)
                 for q, r in zip(queries, results, strict=True)]
    await outbox.publish_many("responses", [(r.query_id.encode(), r) for r in responses])
    answered = time.time()
    entries = [LoggedQuery(q.query_id, q.model_dump(mode="json"), r.model_dump(mode="json"), answered, "kafka")
               for q, r in zip(queries, responses, strict=True)]
    await threads.read(lambda: query_log.record(entries), "query log")
    metrics.QUERIES.labels("kafka").inc(len(responses))
    metrics.QUERY_LATENCY_SECONDS.labels("kafka").observe(latency_ms / 1000)


async def prune_log(query_log: QueryLog, threads: StoreThreads, max_rows: int, max_age_s: float) -> None:
    """Keep the query log bounded by age and rows (feedback joins only recent answers)."""
    await threads.read(lambda: query_log.prune(max_rows, max_age_s, time.time()), "query log pruning")


def fit(response: QueryResponse, max_bytes: int) -> QueryResponse:
    """The response, its hit texts shortened (ending in "…") until it fits `max_bytes`: a thousand long hits must
    still reach the client."""
    limit = 2_000
    while len(response.model_dump_json()) > max_bytes and limit >= 16:
        response = response.model_copy(update={"hits": [
            hit if len(hit.text) <= limit else hit.model_copy(update={"text": hit.text[:limit] + "…"})
            for hit in response.hits]})
        limit //= 2
    return response
