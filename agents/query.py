"""Query agent: `queries` -> validate -> embed (micro-batched) -> search -> `responses`, and the query log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from faust.types import EventT

from schemas import Hit, QueryEvent, QueryResponse
from streams import metrics
from streams.app import Pipeline
from streams.search import SearchRequest
from streams.state.query_log import LoggedQuery

TOPIC = "queries"


def register(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    responses = pipeline.topic("responses")

    async def respond(events: Sequence[EventT]) -> None:
        started = time.perf_counter()
        metrics.BATCH_RECORDS.labels("query").observe(len(events))
        accepted = await pipeline.admit(events, TOPIC, QueryEvent, "query_id")
        if not accepted:
            return
        queries: list[QueryEvent] = [a.record for a in accepted]
        requests = [SearchRequest(q.text, q.top_k, q.filter) for q in queries]
        results = await pipeline.until_done(lambda: pipeline.serving.searcher.search_many(requests), "search")
        latency_ms = (time.perf_counter() - started) * 1000
        answered, pending = [], []
        for query, result in zip(queries, results, strict=True):
            response = QueryResponse(
                query_id=query.query_id,
                hits=[Hit(doc_id=h.doc_id, chunk=h.chunk, score=h.score, text=h.text) for h in result.hits],
                model_version=result.model_version, index_version=result.index_version,
                latency_ms=round(latency_ms, 3), cached=result.cached,
            )
            pending.append(await responses.send(key=query.query_id.encode(),
                                                value=response.model_dump_json().encode()))
            answered.append(LoggedQuery(query.query_id, query.model_dump(mode="json"),
                                        response.model_dump(mode="json"), time.time(), "kafka"))
        await asyncio.gather(*pending)
        await pipeline.log_queries(answered)
        metrics.QUERIES.labels("kafka").inc(len(answered))
        metrics.QUERY_LATENCY_SECONDS.labels("kafka").observe(latency_ms / 1000)

    pipeline.batch_agent(TOPIC, "query", settings.query_batch_records, settings.query_batch_seconds, respond)
