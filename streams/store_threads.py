"""The threads the stores are used from: one writer (qdrant-edge allows one writer per shard) and a few readers,
each call retried with backoff while its store fails (the vector store, the query log, the feedback state, the
evaluation store); `/health` names the stores failing now."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from streams import metrics
from streams.errors import Unfinished
from streams.state.errors import OperationAborted, StoreError
from streams.state.store import VectorStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class WriteAborted(Unfinished):
    """The worker is stopping while a store operation keeps failing: its batch stays uncommitted."""


class StoreThreads:
    """Runs store operations off the event loop. While the store fails, an operation is retried with capped
    exponential backoff and its caller does not move on, so offsets are not committed and consumption pauses
    (backpressure): nothing is dropped. `stopping()` ends the retries with `WriteAborted`."""

    def __init__(self, retry_max_s: float, stopping: Callable[[], bool] = lambda: False) -> None:
        self.retry_max_s = retry_max_s
        self._stopping = stopping
        self._failing: dict[str, dict[int, str]] = {}  # store -> {retry loop: its latest error}
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="search")
        self._state = ThreadPoolExecutor(2, thread_name_prefix="state")  # SQLite waits on locks: not on searches

    async def write(self, operation: Callable[[], T], what: str) -> T:
        """Run a store write on the writer thread until it succeeds (the wait for the thread is the `queue` stage)."""
        submitted = time.perf_counter()

        def timed() -> T:
            metrics.STAGE_SECONDS.labels("queue").inc(time.perf_counter() - submitted)
            return operation()
        return await self._until_done(timed, what, self._writer)

    async def read(self, operation: Callable[[], T], what: str) -> T:
        """Run a read (a search, a ledger lookup) on a reader thread until it succeeds."""
        return await self._until_done(operation, what, self._readers)

    async def state(self, operation: Callable[[], T], what: str) -> T:
        """Run a query log, feedback or evaluation store operation on a state thread until it succeeds."""
        return await self._until_done(operation, what, self._state)

    async def state_once(self, operation: Callable[[], T]) -> T:
        """Run a state operation once on a state thread, without retries (an HTTP client does not wait out a
        lock: the caller decides what a failure means)."""
        return await asyncio.get_running_loop().run_in_executor(self._state, operation)

    async def peek(self, operation: Callable[[], T]) -> T:
        """Run a read once on a reader thread, without retries (HTTP lookups: the caller sees the error)."""
        return await asyncio.get_running_loop().run_in_executor(self._readers, operation)

    def submit_write(self, operation: Callable[[], T]) -> Future[T]:
        """Queue work on the writer thread without waiting for it (closing a retired pair)."""
        return self._writer.submit(operation)

    def failing(self) -> dict[str, str]:
        """The stores an operation is retrying on now, with the latest error of each."""
        return {store: next(reversed(loops.values())) for store, loops in self._failing.items() if loops}

    async def _until_done(self, operation: Callable[[], T], what: str, executor: ThreadPoolExecutor) -> T:
        loop = asyncio.get_running_loop()
        delay = 0.1
        marked: set[str] = set()  # the stores this call has reported failing
        try:
            while True:
                try:
                    return await loop.run_in_executor(executor, operation)
                except OperationAborted as exc:
                    raise WriteAborted(f"{what} stopped early: {exc}") from exc
                except StoreError as exc:
                    metrics.STORE_FAILURES.inc()
                    metrics.STORE_FAILING.labels(exc.store).set(1)
                    metrics.STORE_UP.set(0)
                    self._failing.setdefault(exc.store, {})[id(marked)] = f"{type(exc).__name__}: {exc}"[:500]
                    marked.add(exc.store)
                    if self._stopping():
                        raise WriteAborted(f"{what} not done before shutdown: {exc}") from exc
                    log.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_max_s)
        finally:
            for store in marked:
                self._failing.get(store, {}).pop(id(marked), None)
                if not self._failing.get(store):
                    metrics.STORE_FAILING.labels(store).set(0)
            # up while no operation is retrying on any store (another store's success says nothing of this one)
            metrics.STORE_UP.set(0 if self.failing() else 1)

    async def compact(self, store: VectorStore, interval_s: float) -> bool:
        """Vacuum and flush `store` on the writer thread (`VectorStore.compact`); a failure waits for the next turn
        (in `interval_s`), unlike writes, which retry at once."""
        def compact() -> tuple[bool, float]:  # timed on the writer thread: not the wait behind ingest batches
            started = time.perf_counter()
            return store.compact(), time.perf_counter() - started

        try:
            rewrote, took = await asyncio.get_running_loop().run_in_executor(self._writer, compact)
        except StoreError as exc:
            log.warning("store compaction failed, next try in %.0fs: %s", interval_s, exc)
            return False
        if rewrote:
            metrics.STORE_COMPACT_SECONDS.observe(took)
            log.info("store compacted in %.2fs", took)
        return rewrote

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._state.shutdown(wait=True)
