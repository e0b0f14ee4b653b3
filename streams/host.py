"""What an agent registers through: a faust worker (`streams.app.Worker`) or the in-process harness
(`streams.devtools.harness.Harness`). Agents see only this, so the same `register()` runs in both."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from schemas import Record
from streams.processing import BatchRunner, Contract, FailureHook, Handler, Outbox
from streams.settings import Settings
from streams.shared import Shared
from streams.validation import RawMessage

R = TypeVar("R", bound=Record)


class AgentHost(Protocol):
    settings: Settings
    shared: Shared
    outbox: Outbox
    agents: list[str]  # the agents registered so far

    def batch_agent(self, contract: Contract[R], name: str, size: int, within: float, handler: Handler[R],
                    on_failure: FailureHook[R] | None = None) -> BatchRunner[R]:
        """Run `handler` on micro-batches of `contract.topic` (`size` records or `within` seconds); `on_failure`
        undoes what a record that failed alone half did, before it becomes a dead letter."""
        ...

    def observer(self, topic: str, name: str, size: int, within: float,
                 observe: Callable[[Sequence[RawMessage]], None], consumes: str | None = None) -> None:
        """Show every batch of `topic` to `observe` without holding its offsets back (`consumes`: the topic outside
        gristmill's namespace read instead, a source's; `topic` then labels it)."""
        ...

    def timer(self, interval_s: float, tick: Callable[[], Awaitable[None]]) -> None:
        """Call `tick` every `interval_s`."""
        ...
