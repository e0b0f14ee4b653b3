"""`gristmill bench monitor`: Great Expectations cost and monitor lag per window, at 1,000 and 10,000 records."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

from schemas import Record
from streams.devtools.demo.synthetic import documents, feedback, queries
from streams.ml.monitoring import StreamMonitor, Window
from streams.ml.quality import QualityGate
from streams.ml.serving import open_encoder, open_registry
from streams.settings import Settings
from streams.state.registry import ensure_base_model


def _window(monitor: StreamMonitor, topic: str, records: Sequence[Record]) -> Window:
    for record in records:
        closed = monitor.observe(topic, record)
        if closed is not None:
            return closed
    raise AssertionError("window did not close")


def run_monitor_bench(settings: Settings, sizes: Sequence[int], console: Console) -> None:
    model = ensure_base_model(open_registry(settings))
    encoder = open_encoder(settings, model)
    gate = QualityGate()
    table = Table(title="gristmill bench monitor (one window per topic, after a reference window)")
    for column in ("topic", "records", "expectations", "GX s", "GX ms / expectation", "monitor lag s"):
        table.add_column(column, justify="left" if column == "topic" else "right")
    for size in sizes:
        monitor = StreamMonitor(gate, encoder, window_records=size, window_seconds=1e9,
                                embed_sample=settings.monitor_embed_sample)
        streams: dict[str, Callable[[int], Sequence[Record]]] = {
            "documents": lambda seed, n=size: documents(n, seed),
            "queries": lambda seed, n=size: queries(n, seed),
            "feedback": lambda seed, n=size: feedback(n, seed),
        }
        for topic, make in streams.items():
            monitor.evaluate(_window(monitor, topic, make(1)))  # the reference window
            window = _window(monitor, topic, make(2))
            started = time.perf_counter()
            result = monitor.evaluate(window)
            lag = time.perf_counter() - started
            count = gate.expectation_count(topic)
            table.add_row(topic, f"{size:,}", str(count), f"{result.outcome.seconds:.3f}",
                          f"{1000 * result.outcome.seconds / count:.1f}", f"{lag:.3f}")
    console.print(table)
