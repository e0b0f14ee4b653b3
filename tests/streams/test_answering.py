"""The live experiment as serving sees it: read once per TTL, and never waited for while the evaluation store is
away (the last one read stays in use; one background read at a time finds the store back)."""

from __future__ import annotations

import threading
import time

from streams.answering import ActiveExperiment
from streams.state.errors import StateUnavailable
from streams.state.evaluation_store import ExperimentRecord

RUNNING = ExperimentRecord("e1", "minilm", "v2", "v1", "split", 0.5, "running", 1.0)


class SlowStore:
    """An evaluation store whose reads take `delay_s` and fail while `away` is set; counts reads."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.away = threading.Event()
        self.reads = 0
        self.experiment: ExperimentRecord | None = RUNNING

    def active(self, model: str) -> ExperimentRecord | None:
        self.reads += 1
        seen = self.experiment  # what the store holds when the read begins
        time.sleep(self.delay_s)
        if self.away.is_set():
            raise StateUnavailable("evaluation store", "away")
        return seen


def test_serving_never_waits_for_an_away_store_and_sees_it_back() -> None:
    store = SlowStore(delay_s=1.0)
    active = ActiveExperiment(store, "minilm", ttl_s=0.05)  # type: ignore[arg-type]
    assert active.get(wait=False) == RUNNING  # the first read is waited for
    store.away.set()
    active.forget()
    assert active.get() == RUNNING  # a read that finds the store away keeps the last one (and says it is away)
    time.sleep(0.1)
    started = time.monotonic()
    answers = [active.get(wait=False) for _ in range(50)]  # stale, forgotten or not: serving never waits
    active.forget()
    answers.append(active.get(wait=False))
    assert time.monotonic() - started < store.delay_s and answers == [RUNNING] * 51  # not one read waited for
    reads = store.reads
    time.sleep(store.delay_s * 1.5)
    assert store.reads <= reads + 1  # one background read at a time
    store.away.clear()
    store.experiment = None  # the experiment ended meanwhile
    deadline = time.monotonic() + 10
    while active.get(wait=False) is not None:  # a background read finds the store back
        assert time.monotonic() < deadline, "the store came back but serving still routes the ended experiment"
        time.sleep(0.05)


def test_a_worker_that_changed_the_experiment_routes_by_it_at_once() -> None:
    store = SlowStore(delay_s=0.0)
    active = ActiveExperiment(store, "minilm", ttl_s=60.0)  # type: ignore[arg-type]
    assert active.get(wait=False) == RUNNING
    store.experiment = None
    assert active.get(wait=False) == RUNNING  # within the TTL
    assert active.refresh() is None  # this worker changed it: the next answer routes as the store says now
    assert active.get(wait=False) is None


def test_a_read_begun_before_a_refresh_never_overwrites_it() -> None:
    store = SlowStore(delay_s=0.0)
    active = ActiveExperiment(store, "minilm", ttl_s=0.01)  # type: ignore[arg-type]
    assert active.get(wait=False) == RUNNING
    store.delay_s = 1.0
    time.sleep(0.05)
    assert active.get(wait=False) == RUNNING  # stale: a background read of RUNNING begins
    store.experiment, store.delay_s = None, 0.0
    assert active.refresh() is None  # the experiment ended here, while that read is in flight
    time.sleep(1.5)  # the old read finishes
    active.ttl_s = 60.0
    assert active.get(wait=False) is None
