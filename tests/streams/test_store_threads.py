"""`gristmill_store_up` says whether any store operation is being retried: another store's success during an
outage does not mark it up."""

from __future__ import annotations

import asyncio

from streams import metrics
from streams.state.errors import StoreError
from streams.store_threads import StoreThreads


def store_up() -> float:
    return metrics.STORE_UP._value.get()  # type: ignore[attr-defined]


def test_a_success_elsewhere_does_not_mark_a_failing_store_up() -> None:
    threads = StoreThreads(retry_max_s=0.05)
    failures = 0

    def failing_write() -> None:
        nonlocal failures
        failures += 1
        if failures < 8:
            raise StoreError("the vector store is away")

    async def scenario() -> list[float]:
        write = asyncio.ensure_future(threads.write(failing_write, "upsert"))
        while failures < 2:
            await asyncio.sleep(0.01)
        await threads.state(lambda: None, "query log")  # the query log is fine meanwhile
        during = store_up()
        await write
        return [during, store_up()]

    try:
        assert asyncio.run(scenario()) == [0, 1]
    finally:
        threads.close()
