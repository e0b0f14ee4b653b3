"""Query agent: `queries` -> validate -> embed (micro-batched) -> search -> `responses`, and the query log.

A query is answered from the documents its `principals` may read (public ones only without): the topic's Kafka
ACL is the trust boundary, as whoever may produce to it may name any principal."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial

from schemas import Hit, QueryEvent, QueryResponse
from schemas.records import AttributedQueryEvent
from streams import metrics
from streams.answering import Answering
from streams.host import AgentHost
from streams.ml.experiments import RoutedQuery
from streams.ml.search import SearchRequest
from streams.processing import Contract, Outbox
from streams.state.query_log import LoggedQuery, QueryLog
from streams.state.store import Access
from streams.store_threads import StoreThreads
from streams.validation import RECORD_OVERHEAD_BYTES, Accepted

QUERIES = Contract("queries", QueryEvent, "query_id")
#: `queries` where every query must say whom it is asked for (`GRISTMILL_QUERY_PRINCIPALS_REQUIRED`).
ATTRIBUTED_QUERIES = Contract[QueryEvent]("queries", AttributedQueryEvent, "query_id")


def register(worker: AgentHost) -> None:
    s, shared = worker.settings, worker.shared
    contract = ATTRIBUTED_QUERIES if s.query_principals_required else QUERIES
    worker.batch_agent(contract, "query", s.query_batch_records, s.query_batch_seconds,
                       partial(respond, answering=shared.answering, threads=shared.threads, outbox=worker.outbox,
                               query_log=shared.query_log, max_bytes=s.deadletter_max_bytes))
    worker.timer(60.0, partial(prune_log, shared.query_log, shared.threads, s.query_log_max_rows,
                               s.query_log_max_age_s))


async def respond(batch: Sequence[Accepted[QueryEvent]], *, answering: Answering, threads: StoreThreads,
                  outbox: Outbox, query_log: QueryLog, max_bytes: int = 900_000) -> None:
    """Answer a batch of queries from one serving pair (one encoder call for the cache misses; a live experiment
    routes its share to the candidate), produce the responses, then log every query and its answer's row."""
    started = time.perf_counter()
    metrics.BATCH_RECORDS.labels("query").observe(len(batch))
    queries = [a.record for a in batch]
    answers = await answering.answer([RoutedQuery(q.query_id, SearchRequest(q.text, q.top_k, q.filter, q.mode,
                                                                            q.group, Access.of(q.principals)),
                                                  q.user_id, q.segment)
                                      for q in queries])
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    responses = [fit(QueryResponse(query_id=q.query_id, model_version=a.result.model_version,
                                   index_version=a.result.index_version,
                                   hits=[Hit(doc_id=h.doc_id, chunk=h.chunk, score=h.score, text=h.text)
                                         for h in a.result.hits], latency_ms=latency_ms, cached=a.result.cached,
                                   mode=a.result.mode, group=a.result.group, arm=a.arm,  # type: ignore[arg-type]
                                   experiment=a.experiment if a.arm != "serving" else None),
                     max_bytes - RECORD_OVERHEAD_BYTES - len(q.query_id.encode()))
                 for q, a in zip(queries, answers, strict=True)]
    await outbox.publish_many("responses", [(r.query_id.encode(), r) for r in responses])
    answered = time.time()
    entries = [LoggedQuery(q.query_id, q.model_dump(mode="json"), r.model_dump(mode="json"), answered, "kafka")
               for q, r in zip(queries, responses, strict=True)]
    await threads.state(lambda: query_log.record(entries), "query log")
    await answering.record(answers, answered)
    metrics.QUERIES.labels("kafka").inc(len(responses))
    metrics.QUERY_LATENCY_SECONDS.labels("kafka").observe(latency_ms / 1000)


async def prune_log(query_log: QueryLog, threads: StoreThreads, max_rows: int, max_age_s: float) -> None:
    """Keep the query log bounded by age and rows (feedback joins only recent answers)."""
    await threads.state(lambda: query_log.prune(max_rows, max_age_s, time.time()), "query log pruning")


def fit(response: QueryResponse, max_bytes: int) -> QueryResponse:
    """The response, its hit texts shortened (ending in "…") until its UTF-8 encoding fits `max_bytes`: a thousand
    long multibyte hits must still reach the client. Hits that do not fit even so (a thousand long ids) are left
    off the end."""
    def size(candidate: QueryResponse) -> int:
        return len(candidate.model_dump_json().encode())

    limit = 2_000
    while size(response) > max_bytes and limit >= 16:
        response = response.model_copy(update={"hits": [
            hit if len(hit.text) <= limit else hit.model_copy(update={"text": hit.text[:limit] + "…"})
            for hit in response.hits]})
        limit //= 2
    while (now := size(response)) > max_bytes and response.hits:
        keep = min(len(response.hits) - 1, len(response.hits) * max_bytes // now)
        response = response.model_copy(update={"hits": response.hits[:keep]})
    return response
