"""The monitor agent evaluates closed windows in the background, on its own thread, and never piles them up: while
`monitor_max_pending_windows` wait, a window is skipped and counted."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from agents.monitor import publish_window
from streams import metrics
from streams.devtools.harness import MemoryOutbox
from streams.ml.monitoring import TOPICS, Window


class StuckMonitor:
    """A monitor whose evaluation waits until released (a window far slower than the streams)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.alerts: dict[str, set[str]] = {topic: set() for topic in TOPICS}

    def evaluate(self, window: Window) -> object:
        self.release.wait(10)
        raise RuntimeError("not evaluated in this test")


def skipped(topic: str = "queries") -> float:
    return metrics.MONITOR_WINDOWS_SKIPPED.labels(topic)._value.get()  # type: ignore[attr-defined]


def test_windows_beyond_the_cap_are_skipped_not_queued() -> None:
    monitor, running, waiting = StuckMonitor(), set(), Counter()  # type: ignore[var-annotated]
    evaluator = ThreadPoolExecutor(1)

    def close_window(topic: str = "queries") -> asyncio.Task[None] | None:
        return publish_window(Window(topic, 0.0, invalid=1), monitor=monitor, outbox=MemoryOutbox(),  # type: ignore[arg-type]
                              model_key=b"minilm", evaluator=evaluator, running=running, waiting=waiting,
                              max_pending=2)

    async def scenario() -> None:
        tasks = [close_window() for _ in range(5)]
        assert sum(task is not None for task in tasks) == 2 and len(running) == 2
        feedback = close_window("feedback")  # a busy topic does not starve a quiet one
        assert feedback is not None
        monitor.release.set()
        await asyncio.gather(*[task for task in tasks if task is not None], feedback)
        assert not running and not +waiting
        again = close_window()  # room again
        assert again is not None
        await again

    before, feedback_before = skipped(), skipped("feedback")
    try:
        asyncio.run(scenario())
    finally:
        monitor.release.set()
        evaluator.shutdown()
    assert skipped() - before == 3 and skipped("feedback") == feedback_before
