"""Micro-batching of concurrent requests: whatever arrives while a batch runs goes together in the next one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


class MicroBatcher(Generic[Req, Res]):
    """Continuous batching: an idle batcher answers a lone request at once (no added latency); requests that
    arrive while a batch is being answered are answered together next, up to `max_size` at a time, so
    throughput grows with concurrency. When a batch fails, its requests are answered one by one, so only the
    requests that fail alone see the error.
    """

    def __init__(self, run: Callable[[Sequence[Req]], Awaitable[Sequence[Res]]], max_size: int) -> None:
        self._run = run
        self._max_size = max_size
        self._pending: list[tuple[Req, asyncio.Future[Res]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, request: Req) -> Res:
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:self._max_size], self._pending[self._max_size:]
            try:
                results = await self._run([request for request, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    if not batch[0][1].done():
                        batch[0][1].set_exception(exc)
                else:
                    await self._one_by_one(batch)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _one_by_one(self, batch: list[tuple[Req, asyncio.Future[Res]]]) -> None:
        for request, future in batch:
            try:
                (result,) = await self._run([request])
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)
