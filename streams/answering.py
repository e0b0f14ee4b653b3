"""Answering queries as a live experiment routes them (the Kafka query agent and HTTP share this): the served
answers, their rows in the evaluation store, and the shadow's answers computed later, off the served path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from streams import metrics
from streams.ml.experiments import Answer, RoutedQuery, answer, answer_record
from streams.ml.serving import Serving, ServingSlot
from streams.state.errors import StateUnavailable, StoreError
from streams.state.evaluation_store import EvaluationStore, ExperimentRecord
from streams.store_threads import StoreThreads

log = logging.getLogger(__name__)


class ActiveExperiment:
    """The model's live experiment as the evaluation store says, re-read at most every `ttl_s` (so the query path
    does not read the store per batch). Serving (`get(wait=False)`) never waits for the store once the experiment
    was read: a stale one is re-read in the background, one read at a time, and the last one read routes meanwhile
    (while the store is away too). A worker that changed the experiment `refresh`es it (off the serving path)."""

    def __init__(self, store: EvaluationStore, model: str, ttl_s: float = 1.0) -> None:
        self.store = store
        self.model = model
        self.ttl_s = ttl_s
        self._known: ExperimentRecord | None = None  # the last one read
        self._read_at: float | None = None  # when (None: never, or forgotten)
        self._ever_read = False
        self._generation = 0  # bumped by `forget`/`refresh`: a read begun before never overwrites a later one
        self._refreshing = False
        self._lock = threading.Lock()

    def get(self, wait: bool = True) -> ExperimentRecord | None:
        """The live experiment; `wait` False (serving): the last one read once any was (see the class)."""
        with self._lock:
            if self._read_at is not None and time.monotonic() - self._read_at < self.ttl_s:
                return self._known
            if not wait and self._ever_read:
                if not self._refreshing:
                    self._refreshing = True
                    threading.Thread(target=self._read, args=(self._generation, True), name="experiment-refresh",
                                     daemon=True).start()
                return self._known
            generation = self._generation
        return self._read(generation)

    def refresh(self) -> ExperimentRecord | None:
        """Read it now (this worker just changed it): what serving routes by from then on."""
        with self._lock:
            self._generation += 1
            generation = self._generation
        return self._read(generation)

    def forget(self) -> None:
        """Stale from now: the next `get` re-reads it (serving: in the background)."""
        with self._lock:
            self._generation += 1
            self._read_at = None

    def _read(self, generation: int, background: bool = False) -> ExperimentRecord | None:
        try:
            experiment = self.store.active(self.model)
        except StateUnavailable as exc:
            log.debug("the live experiment is not known now, routing as last read: %s", exc)
            with self._lock:
                if background:
                    self._refreshing = False
                if generation == self._generation:
                    self._read_at = time.monotonic()  # tried: again after `ttl_s`
                return self._known
        except BaseException:
            if background:
                with self._lock:
                    self._refreshing = False
            raise
        with self._lock:
            if background:
                self._refreshing = False
            if generation == self._generation:
                self._known, self._read_at, self._ever_read = experiment, time.monotonic(), True
        return experiment


def lower_priority() -> None:
    """Shadow searches yield the CPU to served ones: the Linux SCHED_IDLE policy (this thread runs only on a core
    nothing else wants, and any served thread that wakes preempts it at once), else niceness 19."""
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):  # not permitted, or not Linux
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


class ShadowRunner:
    """Runs the shadow's searches on a thread of their own at lower priority, after the served answers went out;
    at most `max_pending` wait (more are skipped and counted), so the served path never waits for the shadow."""

    def __init__(self, evaluation: EvaluationStore, max_pending: int = 256) -> None:
        self.evaluation = evaluation
        self.max_pending = max_pending
        self.pending = 0
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="shadow", initializer=lower_priority)
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, queries: Sequence[RoutedQuery], challenger: Serving | None,
               experiment: ExperimentRecord | None) -> None:
        if not queries or challenger is None or experiment is None:
            return
        room = max(0, self.max_pending - self.pending)
        if len(queries) > room:
            metrics.SHADOW_SEARCHES.labels("skipped").inc(len(queries) - room)
            queries = queries[:room]
        if not queries:
            return
        self.pending += len(queries)
        task = asyncio.get_running_loop().create_task(self._run(list(queries), challenger, experiment.id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, queries: list[RoutedQuery], challenger: Serving, experiment_id: str) -> None:
        def search_and_record() -> None:
            results = challenger.searcher.search_many([q.request for q in queries])
            now = time.time()
            self.evaluation.record_answers([answer_record(q, r, "shadow", experiment_id, None, r.latency_ms, now)
                                            for q, r in zip(queries, results, strict=True)])
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, search_and_record)
            metrics.SHADOW_SEARCHES.labels("answered").inc(len(queries))
        except StoreError as exc:  # the challenger was let go (the experiment ended) or a store is away meanwhile
            metrics.SHADOW_SEARCHES.labels("failed").inc(len(queries))
            log.warning("shadow searches of %s not done: %s", experiment_id, exc)
        except Exception:  # the shadow must never hurt serving
            metrics.SHADOW_SEARCHES.labels("failed").inc(len(queries))
            log.exception("shadow searches of %s failed", experiment_id)
        finally:
            self.pending -= len(queries)

    async def drain(self) -> None:
        """Wait for the shadow searches in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Answering:
    """One worker's way of answering: the serving slot, the live experiment, the evaluation store, the shadow."""

    def __init__(self, serving: ServingSlot, threads: StoreThreads, evaluation: EvaluationStore,
                 experiment: ActiveExperiment, shadow: ShadowRunner) -> None:
        self.serving = serving
        self.threads = threads
        self.evaluation = evaluation
        self.experiment = experiment
        self.shadow = shadow

    async def answer(self, queries: Sequence[RoutedQuery], *, retry: bool = True) -> list[Answer]:
        """Answer a batch from one serving pair (and the challenger where the experiment routes a query there);
        the shadow's share is queued, not awaited. `retry` False: one try (HTTP; the caller sees the error)."""
        taken: list[Any] = [self.serving.current, self.serving.challenger,  # the batch's pairs and experiment
                            await asyncio.get_running_loop().run_in_executor(None, self.experiment.get, False)]

        def search() -> tuple[list[Answer], list[RoutedQuery]]:
            try:
                return answer(queries, taken[0], taken[1], taken[2])
            except StoreError:
                if self.serving.current is taken[0] and self.serving.challenger is taken[1]:
                    raise  # the store itself is away
                # switched (and retired) under it: the batch again, on the pairs (and experiment) of now
                taken[:] = [self.serving.current, self.serving.challenger, self.experiment.get(False)]
                return answer(queries, taken[0], taken[1], taken[2])

        answers, shadow = await (self.threads.read(search, "search") if retry else self.threads.peek(search))
        self.shadow.submit(shadow, taken[1], taken[2])
        return answers

    async def record(self, answers: Sequence[Answer], answered_at: float) -> None:
        """The answers' rows in the evaluation store, each with the time its arm's searcher took (embedding and
        search in its batch; interleave: the slower of the two), so arms compare on what they cost."""
        await self.record_each([(answer, answered_at) for answer in answers])

    async def record_each(self, answered: Sequence[tuple[Answer, float]]) -> None:
        """`record`, each answer with its own time (answers logged after they were sent, in a batch)."""
        rows = [answer_record(a.query, a.result, a.arm, a.experiment, a.credits, a.result.latency_ms, at)
                for a, at in answered]
        await self.threads.state(lambda: self.evaluation.record_answers(rows), "evaluation store")
