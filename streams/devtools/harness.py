"""An in-process harness for agents, as Faust's `Agent.test_context()` and Bytewax's `TestingSource`/`TestingSink`
are: no broker and no worker process. An agent's real `register()` runs against it; `send` feeds its handler raw
Kafka messages through the same `BatchRunner` a worker uses, and what the agent produces (responses, dead letters,
retrain requests, model updates) is collected per topic.

By default the shared state sits on the test doubles (a hashing encoder, an in-memory vector store); pass
`opener=onnx_pairs(settings)` for the real encoder and store.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from importlib import import_module
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from schemas import Record
from streams.ml.serving import PairOpener, Serving, serving_pair
from streams.processing import BatchRunner, Contract, FailureHook, Handler
from streams.settings import Settings
from streams.shared import Shared
from streams.state.hashing_encoder import HashingEncoder
from streams.state.memory_store import InMemoryVectorStore
from streams.state.registry import LocalModelRegistry, ModelVersion
from streams.validation import RawMessage

R = TypeVar("R", bound=Record)
DIM = 64


class MemoryOutbox:
    """Collects what is published, per topic, in order."""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[bytes | None, Record]]] = defaultdict(list)

    async def publish_many(self, topic: str, items: Sequence[tuple[bytes | None, Record]]) -> None:
        self.records[topic].extend(items)


def double_pairs(settings: Settings, dim: int = DIM) -> PairOpener:
    """Pairs of a hashing encoder and an in-memory store per model version (kept across re-opens)."""
    stores: dict[str, InMemoryVectorStore] = {}

    def open_pair(model: ModelVersion) -> Serving:
        store = stores.setdefault(model.version, InMemoryVectorStore(f"chunks-{model.version}", dim))
        return serving_pair(settings, model, HashingEncoder(model.version, dim), store)
    return open_pair


def double_registry(root: Path, name: str = "minilm", versions: Iterable[str] = ("v1",), dim: int = DIM
                    ) -> LocalModelRegistry:
    """A registry of placeholder versions (no model files: the hashing encoder needs none); the first serves."""
    registry = LocalModelRegistry(root, name)
    for version in versions:
        files = root / f".staging-{version}"
        files.mkdir(parents=True)
        (files / "model.onnx").write_bytes(b"placeholder: served by the hashing encoder")
        registry.register(files, source=str(root / "no-weights"), facts={"dim": dim, "max_tokens": 256},
                          version=version)
        shutil.rmtree(files, ignore_errors=True)
    registry.promote(next(iter(versions), "v1"))
    return registry


def message(topic: str, value: bytes | Mapping[str, Any] | Record | None, key: bytes | str | None = None, *,
            partition: int = 0, offset: int = 0, timestamp: float | None = None) -> RawMessage:
    """A raw message as a worker would receive it; a mapping or record value is JSON-encoded."""
    if isinstance(value, Record):
        raw: bytes | None = value.model_dump_json(exclude_none=True).encode()
    elif isinstance(value, Mapping):
        raw = json.dumps(value).encode()
    else:
        raw = value
    return RawMessage(topic, partition, offset, key.encode() if isinstance(key, str) else key, raw, timestamp)


class Harness:
    """Shared state, a memory outbox and the agents registered on them; use as a context manager."""

    def __init__(self, data_dir: Path, *, opener: PairOpener | None = None, registry: LocalModelRegistry | None = None,
                 **settings: Any) -> None:
        self.settings = Settings(data_dir=data_dir, **settings)
        self.outbox = MemoryOutbox()
        self.loop = asyncio.new_event_loop()
        self.shared = Shared.open(self.settings, self.outbox,
                                  registry=registry or double_registry(data_dir / "models", self.settings.model_name),
                                  opener=opener or double_pairs(self.settings))
        self.runners: dict[str, BatchRunner[Any]] = {}  # by logical topic
        self.observers: dict[str, list[Callable[[Sequence[RawMessage]], None]]] = defaultdict(list)
        self.timers: list[Callable[[], Awaitable[None]]] = []
        self.agents: list[str] = []
        self._offsets: dict[tuple[str, int], int] = defaultdict(int)

    # -- the AgentHost protocol --------------------------------------------------------------------------------
    def batch_agent(self, contract: Contract[R], name: str, size: int, within: float, handler: Handler[R],
                    on_failure: FailureHook[R] | None = None) -> BatchRunner[R]:
        runner = BatchRunner(contract, name, handler, self.shared.dead_letters, self.shared.health, on_failure)
        self.runners[contract.topic] = runner
        return runner

    def observer(self, topic: str, name: str, size: int, within: float,
                 observe: Callable[[Sequence[RawMessage]], None], consumes: str | None = None) -> None:
        self.observers[topic].append(observe)

    def timer(self, interval_s: float, tick: Callable[[], Awaitable[None]]) -> None:
        self.timers.append(tick)

    # -- driving it --------------------------------------------------------------------------------------------
    def register(self, *agents: str) -> Harness:
        """Run the `register()` of agent modules (`ingest`, `query`, ...) against this harness."""
        for name in agents:
            import_module(f"agents.{name}").register(self)
            self.agents.append(name)
        return self

    def send(self, topic: str, messages: Sequence[RawMessage | Mapping[str, Any] | Record]) -> None:
        """Deliver one batch of `topic` to its observers and to its agent, and wait until it is processed. Values
        that are not `RawMessage`s are keyed by the contract's key field and get the next offsets of partition 0."""
        self.run(self.deliver(topic, messages))

    async def deliver(self, topic: str, messages: Sequence[RawMessage | Mapping[str, Any] | Record]) -> None:
        """`send` from a coroutine already running on the harness's loop (an HTTP test's scenario)."""
        batch = [m if isinstance(m, RawMessage) else self._message(topic, m) for m in messages]
        for observe in self.observers.get(topic, []):
            observe(batch)
        if topic in self.runners:
            await self.runners[topic].run(batch)

    def tick(self) -> None:
        """Call every timer once."""
        for tick in self.timers:
            self.run(tick())

    def run(self, work: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(work)

    def published(self, topic: str) -> list[Record]:
        return [record for _, record in self.outbox.records.get(topic, [])]

    def _message(self, topic: str, value: Mapping[str, Any] | Record) -> RawMessage:
        runner = self.runners.get(topic)
        field = runner.contract.key_field if runner else None
        fields = value.model_dump() if isinstance(value, Record) else value
        key = str(fields[field]) if field and field in fields else None
        offset = self._offsets[(topic, 0)]
        self._offsets[(topic, 0)] += 1
        return message(topic, value, key, offset=offset)

    def close(self) -> None:
        self.shared.close()
        self.loop.close()

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
