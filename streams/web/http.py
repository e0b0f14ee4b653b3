"""HTTP API of a worker (aiohttp, 127.0.0.1 by default): search, health, documents, Prometheus metrics.

Errors are answered by type: an invalid request 400, an oversized query 413, an unknown version 404, nothing to
roll back 409; a Host or Origin that is not allowed 403; without a valid API key 401, with a key that lacks the
route's role 403 (`streams.web.guards`, `streams.web.api_keys`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from aiohttp import web
from mode import Service
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field, TypeAdapter

from schemas import FILTER_FIELDS, INTEGER_FILTER_FIELDS, ModelUpdate
from schemas.records import METADATA_PREFIX
from streams import metrics
from streams.app import Worker
from streams.batching import MicroBatcher
from streams.host import AgentHost
from streams.ml.experiments import Answer, RoutedQuery, end_update, rolling_out, start_update
from streams.ml.search import SearchRequest
from streams.ml.trainer import promote_update, rollback_update
from streams.processing import publish
from streams.shared import Shared
from streams.state.errors import (
    ExperimentConflict,
    NoExperiment,
    NothingToRollBack,
    UnknownModelVersion,
)
from streams.state.query_log import LoggedQuery
from streams.state.store import INTERNAL, Access
from streams.store_threads import WriteAborted
from streams.web.api_keys import ApiKeys
from streams.web.dashboard import PAGE, dashboard_state
from streams.web.evaluation import EVALUATION_PARAMETERS, evaluation_body, evaluation_query, experiment_body
from streams.web.guards import (
    HEALTH_DETAIL_ROLE,
    BadRequestBody,
    GuardedSite,
    access_guard,
    caller_of,
    headers_expected_next,
    host_guard,
    read_json,
)
from streams.web.openapi import OPENAPI
from streams.web.parameters import InvalidParameter, integer, number, search_request, unique, valid_unicode

log = logging.getLogger(__name__)
#: Longest a stopping worker waits for the answers it sent to be logged.
LOGGING_DRAIN_S = 10.0
#: HTTP answers waiting to be logged at most (a store outage: beyond this, answers go unlogged, counted).
MAX_WAITING_ANSWERS = 10_000
#: What the HTTP API calls the `queries` contract's fields (its errors name them so).
HTTP_NAMES = {"text": "q", "top_k": "k"}
#: The parameters `GET /search` reads.
SEARCH_PARAMETERS = frozenset({"q", "k", "mode", "group", "user_id", "segment", *FILTER_FIELDS})
#: Any strings (an id that was never indexed answers null) but valid Unicode: a lone surrogate is refused.
DOC_IDS = TypeAdapter(Annotated[list[str], Field(max_length=10_000)])


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def query_filter(params: Mapping[str, str], metadata_types: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The exact-match filter of a GET search from its query parameters (`metadata.lang=de` style for metadata):
    integer fields, and metadata keys declared integer, float or bool (`metadata_types`), parsed strictly
    (`InvalidParameter` if not); other values are strings. Conditions other than exact ones are POST's."""
    def typed(key: str, value: str) -> Any:
        kind = (metadata_types or {}).get(key.removeprefix(METADATA_PREFIX)) if key.startswith(METADATA_PREFIX) \
            else "version" if key in INTEGER_FILTER_FIELDS else None
        if kind == "version":
            return integer(value, f"filter {key!r}")
        if kind == "integer":
            return number(value, f"filter {key!r}", whole=True)
        if kind == "float":
            return number(value, f"filter {key!r}")
        if kind == "bool":
            if value not in ("true", "false"):
                raise InvalidParameter(f"filter {key!r} must be true or false, not {value[:40]!r}")
            return value == "true"
        return value

    return {key: typed(key, value) for key, value in params.items()
            if key in FILTER_FIELDS or key.startswith(METADATA_PREFIX)}


def access_of(request: web.Request) -> Access:
    """What the request's caller may read: the documents its key's principals open, and public ones (only public
    ones without a key, or with the admin token)."""
    caller = caller_of(request)
    return Access.of(caller.principals if caller is not None else None)


def build_http_app(worker: AgentHost) -> web.Application:
    """The worker's HTTP app; `InvalidApiKeysFile` when a keys file is configured and cannot be used."""
    routes = web.RouteTableDef()
    shared = worker.shared
    settings = worker.settings
    keys = ApiKeys(settings.api_keys_file, settings.admin_token)

    async def search_many(queries: Sequence[RoutedQuery]) -> list[Answer]:
        return await shared.answering.answer(queries, retry=False)  # the pair taken once per batch

    batcher = MicroBatcher(search_many, worker.settings.query_batch_records)  # concurrent searches share encodes
    answer_log = AnswerLog(shared)  # answers sent, logged behind them

    async def run_search(access: Access, text: Any, k: Any, filter_: Any, mode: Any = None, group: Any = "chunk",
                         user_id: Any = None, segment: Any = None) -> web.Response:
        if isinstance(text, str) and len(text) > settings.http_max_query_chars:
            return _error(413, f"query text 'q' has {len(text):,} characters; at most "
                               f"{settings.http_max_query_chars:,} are accepted")
        query_id = f"http-{uuid.uuid4()}"
        try:  # checked as the `queries` contract checks a search from Kafka
            request = search_request({"query_id": query_id, "text": text, "top_k": k, "filter": filter_,
                                      "mode": mode, "group": group, "user_id": user_id, "segment": segment},
                                     HTTP_NAMES)
        except InvalidParameter as exc:
            return _error(400, str(exc))
        text, k, filter_, mode, group = request.text, request.top_k, request.filter, request.mode, request.group
        started = time.perf_counter()
        answer = await batcher.submit(RoutedQuery(query_id, SearchRequest(text, k, filter_, mode, group, access),
                                                  user_id, segment))
        result = answer.result
        latency_s = time.perf_counter() - started
        metrics.QUERY_LATENCY_SECONDS.labels("http").observe(latency_s)
        metrics.QUERIES.labels("http").inc()
        body = {
            "query_id": query_id,
            "query": text,
            "hits": [{"doc_id": h.doc_id, "chunk": h.chunk, "score": round(h.score, 6), "text": h.text,
                      "source": h.source} for h in result.hits],
            "model_version": result.model_version,
            "index_version": result.index_version,
            "latency_ms": round(latency_s * 1000, 3),
            "cached": result.cached,
            "mode": result.mode,
            "group": result.group,
            "arm": answer.arm,
            "experiment": answer.experiment if answer.arm != "serving" else None,
        }
        answered = time.time()
        logged = LoggedQuery(query_id, {"text": text, "top_k": k, "filter": filter_, "mode": mode, "group": group,
                                        "user_id": user_id, "segment": segment,
                                        "principals": sorted(access.principals)},
                             {k: v for k, v in body.items() if k != "query"}, answered, "http")
        answer_log.add(logged, answer)  # logged after it is sent
        return web.json_response(body)

    @routes.get("/search")
    async def search_get(request: web.Request) -> web.Response:
        try:
            params = unique(request.query, SEARCH_PARAMETERS | {key for key in request.query
                                                                 if key.startswith(METADATA_PREFIX)})
            k, filter_ = integer(params.get("k", "10"), "k"), query_filter(params, settings.metadata_index_types)
        except InvalidParameter as exc:
            return _error(400, str(exc))
        return await run_search(access_of(request), params.get("q", ""), k, filter_, params.get("mode"),
                                params.get("group", "chunk"), params.get("user_id"), params.get("segment"))

    @routes.post("/search")
    async def search_post(request: web.Request) -> web.Response:
        try:
            body = await read_json(request, settings.http_body_timeout_s)
        except BadRequestBody as exc:
            return _error(400, str(exc))
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object with a string 'q'")
        return await run_search(access_of(request), body.get("q", ""), body.get("k", 10), body.get("filter") or {},
                                body.get("mode"), body.get("group", "chunk"), body.get("user_id"), body.get("segment"))

    @routes.get("/documents/{doc_id:.+}")
    async def document(request: web.Request) -> web.Response:
        doc_id, access = request.match_info["doc_id"], access_of(request)
        store = shared.serving.current.store
        states = await shared.threads.peek(lambda: store.get_documents([doc_id]))
        if doc_id not in states or not access.may_read(states[doc_id].acl):
            return _error(404, f"document {doc_id!r} was never indexed")  # or is not the caller's to read
        stored = await shared.threads.peek(lambda: store.chunks(doc_id))
        chunks = [c for c in stored if access.may_read(c.acl)]
        state = states[doc_id]
        whole = len(chunks) == len(stored)  # a chunk narrowed (a write that failed half-way) hides the rest too
        return web.json_response({
            "doc_id": doc_id, "version": state.version, "deleted": state.deleted, "source": state.source,
            "title": state.title if whole else None, "metadata": state.metadata if whole else {},
            "content_hash": state.content_hash,
            "model_version": state.model_version, "indexed_at": state.indexed_at,
            "chunks": [{"chunk": c.chunk, "version": c.version, "text": c.text} for c in chunks],
        })

    @routes.post("/documents/versions")
    async def document_versions(request: web.Request) -> web.Response:
        try:
            body = await read_json(request, settings.http_body_timeout_s)
            doc_ids = [valid_unicode(d, "doc_ids") for d in DOC_IDS.validate_python(body["doc_ids"])]
        except (BadRequestBody, KeyError, TypeError, ValueError):
            return _error(400, "body must be {\"doc_ids\": [up to 10,000 document ids]}")
        store = shared.serving.current.store
        access = access_of(request)
        states = {d: state for d, state in (await shared.threads.peek(lambda: store.get_documents(doc_ids))).items()
                  if access.may_read(state.acl)}  # a document the caller may not read is as unknown
        return web.json_response({"versions": {d: (states[d].version if d in states else None) for d in doc_ids},
                                  "deleted": sorted(d for d, state in states.items() if state.deleted)})

    @routes.get("/")
    async def dashboard_page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    @routes.get("/api/dashboard")
    async def dashboard_data(request: web.Request) -> web.Response:
        trains, caller = "trainer" in worker.agents, caller_of(request)
        reader = INTERNAL if caller is not None and caller.may("admin") else access_of(request)  # admins: all of it
        state = await asyncio.get_running_loop().run_in_executor(None, lambda: dashboard_state(shared, trains,
                                                                                              reader=reader))
        state["caller"] = {"name": caller.name, "roles": sorted(caller.roles)} if caller else None
        return web.json_response(state, dumps=lambda value: json.dumps(value, default=str))

    @routes.get("/openapi.json")
    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    @routes.get("/health")
    async def health(request: web.Request) -> web.Response:
        """Open as a liveness check; with a keys file, the report beyond `status` needs a `read` key."""
        crash_looping = shared.health.degraded()
        failing = shared.threads.failing()  # stores retried now (a locked query log, a database away)
        status = "degraded" if crash_looping or failing else "ok"
        caller = caller_of(request)
        if keys.enforced and (caller is None or not caller.may(HEALTH_DETAIL_ROLE)):
            return web.json_response({"status": status})
        serving = shared.serving.current
        chunks, documents = await asyncio.gather(shared.threads.peek(serving.store.count_chunks),
                                                 shared.threads.peek(serving.store.count_documents))
        rollout = shared.serving.rollout
        return web.json_response({
            "status": status,
            "degraded_agents": crash_looping,
            "failing_stores": failing,
            "decisions_refused": list(shared.serving.refused)[:5],
            "agents": shared.health.as_dict(),
            "model_version": serving.encoder.version,
            "index_version": serving.searcher.index_version,
            "encoder_provider": serving.encoder.provider,
            "index": {"chunks": chunks, "documents": documents},
            "rollout": rollout.as_dict() if rollout else None,
            "challenger_build": build.as_dict() if (build := shared.serving.challenger_build) else None,
            "trainer": shared.trainer.snapshot() if "trainer" in worker.agents else None,
            "sources": {c.topic.removeprefix("source:"): {"topic": c.consumes, **c.counts.as_dict()}
                        for c in shared.sources} if "ingest" in worker.agents else {},
            "kafka": worker.settings.kafka_bootstrap_servers,
            "namespace": worker.settings.namespace,
        })

    async def send_model_update(update: ModelUpdate) -> None:
        await publish(worker.outbox, "model-updates", worker.settings.model_name.encode(), update)
        metrics.MODEL_UPDATES.labels(update.status).inc()

    async def send_admin_update(request: web.Request, build: Callable[[], ModelUpdate],
                                refusals: Mapping[type[Exception], int]) -> web.Response:
        """An operator's model update (the caller's `admin` role checked by `access_guard`), built off the loop (a
        typed refusal answers with its status), sent to `model-updates`."""
        try:
            update = await asyncio.get_running_loop().run_in_executor(None, build)
        except tuple(refusals) as exc:
            return _error(next(status for kind, status in refusals.items() if isinstance(exc, kind)), str(exc))
        await send_model_update(update)
        return web.json_response({"requested": update.status, "version": update.version,
                                  "experiment": update.experiment.model_dump() if update.experiment else None},
                                 status=202)

    @routes.post("/admin/promote")
    async def admin_promote(request: web.Request) -> web.Response:
        try:
            body = await read_json(request, settings.http_body_timeout_s)
            version = body["version"]
            if not isinstance(version, str):
                raise TypeError("'version' must be a string")
        except (ValueError, TypeError, KeyError) as exc:
            return _error(400, f"body must be {{\"version\": \"vN\"}}: {exc}")
        return await send_admin_update(request, lambda: promote_update(shared.registry, version,
                                                                       "promoted by an operator"),
                                       {UnknownModelVersion: 404})

    @routes.post("/admin/rollback")
    async def admin_rollback(request: web.Request) -> web.Response:
        return await send_admin_update(request, lambda: rollback_update(shared.registry), {NothingToRollBack: 409})

    @routes.get("/evaluation")
    async def evaluation(request: web.Request) -> web.Response:
        try:
            query = evaluation_query(unique(request.query, EVALUATION_PARAMETERS))
        except InvalidParameter as exc:
            return _error(400, str(exc))
        body = await asyncio.get_running_loop().run_in_executor(None, lambda: evaluation_body(shared, **query))
        return web.json_response(body, dumps=lambda value: json.dumps(value, default=str))

    @routes.get("/experiment")
    async def experiment_status(request: web.Request) -> web.Response:
        body = await asyncio.get_running_loop().run_in_executor(None, lambda: experiment_body(shared))
        return web.json_response(body, dumps=lambda value: json.dumps(value, default=str))

    @routes.post("/admin/experiment")
    async def admin_experiment(request: web.Request) -> web.Response:
        try:
            body = await read_json(request, settings.http_body_timeout_s)
            version, mode, fraction = body["version"], body.get("mode", "shadow"), body.get("fraction", 0.1)
            if not isinstance(version, str) or mode not in ("shadow", "split", "interleave") or \
                    isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
                raise ValueError("'version' a string, 'mode' shadow|split|interleave, 'fraction' in (0, 1]")
        except (BadRequestBody, ValueError, TypeError, KeyError) as exc:
            return _error(400, f"body must be {{\"version\": \"vN\", \"mode\": ..., \"fraction\": ...}}: {exc}")
        return await send_admin_update(
            request, lambda: start_update(shared.registry, shared.evaluation, version, mode, float(fraction),
                                          rolling=rolling_out(shared.serving)),
            {UnknownModelVersion: 404, ExperimentConflict: 409})  # `CandidateServes` is a conflict too

    @routes.post("/admin/experiment/{action:stop|promote}")
    async def admin_experiment_end(request: web.Request) -> web.Response:
        action = request.match_info["action"]
        return await send_admin_update(
            request, lambda: end_update(shared.evaluation, settings.model_name, action,  # type: ignore[arg-type]
                                        f"{action} by an operator"), {NoExperiment: 409})

    @routes.get("/metrics")
    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    allowed = [settings.http_host, *settings.http_allowed_hosts.split(",")]
    app = web.Application(client_max_size=1024 * 1024,
                          middlewares=[headers_expected_next, host_guard(allowed), access_guard(keys)])
    app.add_routes(routes)
    app.on_cleanup.append(answer_log.finish)  # after the requests in flight were answered
    return app


class AnswerLog:
    """HTTP answers are logged after they are sent (a client never waits for the state stores, nor fails with
    them): one writer logs what waits in batches, retried through a store outage like the agents' writes. At most
    `MAX_WAITING_ANSWERS` wait (beyond, an answer goes unlogged, counted and logged)."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.waiting: list[tuple[LoggedQuery, Answer]] = []
        self.closed = False
        self._writer: asyncio.Task[None] | None = None

    def add(self, logged: LoggedQuery, answer: Answer) -> None:
        if self.closed:  # answered while the worker stops, after the last answers were logged
            log.warning("HTTP query %s answered while stopping: not logged", logged.query_id)
            metrics.RECORDS_FAILED.labels("queries", "query log").inc()
            return
        if len(self.waiting) >= MAX_WAITING_ANSWERS:
            log.warning("HTTP query %s answered but not logged: %d answers wait for the state stores already",
                        logged.query_id, len(self.waiting))
            metrics.RECORDS_FAILED.labels("queries", "query log").inc()
            return
        self.waiting.append((logged, answer))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting[:500], self.waiting[500:]
            try:
                await self._log(batch)
            except WriteAborted as exc:  # stopping
                log.warning("%d HTTP answers not logged: %s", len(batch) + len(self.waiting), exc)
                metrics.RECORDS_FAILED.labels("queries", "query log").inc(len(batch) + len(self.waiting))
                self.waiting = []
            except Exception:  # a bug or a record the store refuses: this batch only, the writer goes on
                log.exception("%d HTTP answers not logged", len(batch))
                metrics.RECORDS_FAILED.labels("queries", "query log").inc(len(batch))

    async def _log(self, batch: list[tuple[LoggedQuery, Answer]]) -> None:
        shared = self.shared
        entries = [logged for logged, _ in batch]
        await shared.threads.state(lambda: shared.query_log.record(entries), "query log (HTTP)")
        await shared.answering.record_each([(answer, logged.answered_at) for logged, answer in batch])

    async def finish(self, app: web.Application) -> None:
        """At the app's cleanup, once no request is served any more: the answers sent are logged before the stores close
        (a stop aborts retries); what is left after `LOGGING_DRAIN_S` is counted unlogged."""
        self.closed = True
        if self._writer is not None:
            await asyncio.wait([self._writer], timeout=LOGGING_DRAIN_S)
        if self.waiting:
            log.warning("%d HTTP answers not logged before the stop", len(self.waiting))
            metrics.RECORDS_FAILED.labels("queries", "query log").inc(len(self.waiting))
            self.waiting = []


class HttpService(Service):
    """Serves the HTTP API for as long as the faust worker runs; refreshes index gauges."""

    def __init__(self, worker: Worker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.worker = worker
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        settings = self.worker.settings
        self._runner = web.AppRunner(build_http_app(self.worker), access_log=None,
                                     keepalive_timeout=settings.http_idle_timeout_s)
        await self._runner.setup()
        await GuardedSite(self._runner, settings.http_host, settings.http_port, settings.http_header_timeout_s).start()
        log.info("HTTP API on http://%s:%d", settings.http_host, settings.http_port)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @Service.task
    async def _refresh_gauges(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.should_stop:
            try:
                await loop.run_in_executor(None, self.worker.refresh_index_gauges)
                self.worker.refresh_consumer_lag()
            except Exception as exc:  # gauges must never take the worker down
                log.debug("index gauges not refreshed: %s", exc)
            await self.sleep(2.0)
