"""Micro-batching of concurrent requests: wait a few milliseconds, answer them with one batched call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


class MicroBatcher(Generic[Req, Res]):
    """Collects requests for at most `max_wait_s` (or `max_size` of them) and hands them to `run` together.

    A lone request waits at most `max_wait_s`; under load, batches grow and throughput scales.
    """

    def __init__(self, run: Callable[[Sequence[Req]], Awaitable[Sequence[Res]]], max_size: int,
                 max_wait_s: float) -> None:
        self._run = run
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._pending: list[tuple[Req, asyncio.Future[Res]]] = []
        self._flusher: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, request: Req) -> Res:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Res] = loop.create_future()
        self._pending.append((request, future))
        if len(self._pending) >= self._max_size:
            self._flush()
        elif self._flusher is None:
            self._flusher = loop.call_later(self._max_wait_s, self._flush)
        return await future

    def _flush(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._answer(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _answer(self, batch: list[tuple[Req, asyncio.Future[Res]]]) -> None:
        try:
            results = await self._run([request for request, _ in batch])
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
