"""A batch through the contract, the validation gate and a handler: a record's failure is that record's alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from schemas import DeadLetter, DocumentEvent
from streams.devtools.harness import MemoryOutbox, message
from streams.errors import Unfinished
from streams.processing import AgentHealth, BatchRunner, Contract, DeadLetterSink
from streams.validation import Accepted, RawMessage

DOCUMENTS = Contract("documents", DocumentEvent, "doc_id")


def batch(*doc_ids: str) -> list[RawMessage]:
    return [message("documents", {"doc_id": d, "version": 1, "op": "upsert", "text": "t"}, d, offset=i)
            for i, d in enumerate(doc_ids)]


class Handler:
    """Applies documents, raising for the poison ones whenever they are part of a call."""

    def __init__(self, poison: set[str], error: type[BaseException] = TypeError) -> None:
        self.poison = poison
        self.error = error
        self.applied: list[str] = []
        self.calls = 0

    async def __call__(self, records: Sequence[Accepted[DocumentEvent]]) -> None:
        self.calls += 1
        if any(r.record.doc_id in self.poison for r in records):
            raise self.error("cannot store this one")
        self.applied += [r.record.doc_id for r in records]


def run(runner: BatchRunner[DocumentEvent], messages: list[RawMessage]) -> None:
    asyncio.run(runner.run(messages))


@pytest.mark.parametrize("poison", [{"d0"}, {"d7"}, {"d3"}, {"d0", "d7"}, {"d2", "d3", "d4"}],
                         ids=["first", "last", "middle", "first-and-last", "three-together"])
def test_poison_records_become_dead_letters_and_their_neighbours_are_applied(poison: set[str]) -> None:
    outbox, handler = MemoryOutbox(), Handler(poison)
    failures: list[str] = []

    async def undo(record: Accepted[DocumentEvent], exc: BaseException) -> None:
        failures.append(record.record.doc_id)

    runner = BatchRunner(DOCUMENTS, "ingest", handler, DeadLetterSink(outbox), on_failure=undo)
    run(runner, batch(*(f"d{i}" for i in range(8))))
    assert sorted(handler.applied) == sorted(f"d{i}" for i in range(8) if f"d{i}" not in poison)
    letters = [letter for _, letter in outbox.records["deadletter"]]
    assert sorted(f"d{letter.offset}" for letter in letters) == sorted(poison) == sorted(failures)
    assert all(isinstance(letter, DeadLetter) and letter.exception == "TypeError" and letter.errors[0].loc == "record"
               and "cannot store this one" in letter.errors[0].msg for letter in letters)
    assert handler.calls <= 2 * 8  # bisection, not a retry storm


def test_a_lone_poison_record_is_dead_lettered_and_a_clean_batch_is_one_call() -> None:
    outbox, handler = MemoryOutbox(), Handler({"only"})
    runner = BatchRunner(DOCUMENTS, "ingest", handler, DeadLetterSink(outbox))
    run(runner, batch("only"))
    run(runner, batch("a", "b", "c"))
    assert [letter.offset for _, letter in outbox.records["deadletter"]] == [0]
    assert handler.applied == ["a", "b", "c"] and handler.calls == 2


def test_an_unfinished_batch_is_withheld_whole_never_dead_lettered() -> None:
    outbox, handler = MemoryOutbox(), Handler({"d1"}, error=Unfinished)
    runner = BatchRunner(DOCUMENTS, "ingest", handler, DeadLetterSink(outbox))
    with pytest.raises(Unfinished):
        run(runner, batch("d0", "d1", "d2"))
    assert "deadletter" not in outbox.records and handler.applied == []


def test_invalid_and_failing_records_in_one_batch() -> None:
    outbox, handler = MemoryOutbox(), Handler({"bad-later"})
    runner = BatchRunner(DOCUMENTS, "ingest", handler, DeadLetterSink(outbox))
    messages = [*batch("good", "bad-later"), message("documents", b"not json", b"x", offset=9)]
    run(runner, messages)
    reasons = {letter.offset: (letter.exception, letter.errors[0].loc) for _, letter in outbox.records["deadletter"]}
    assert reasons == {9: (None, "value"), 1: ("TypeError", "record")} and handler.applied == ["good"]


def test_health_says_degraded_while_an_agent_crashes_more_recently_than_it_completes() -> None:
    health = AgentHealth()
    health.batch_done("ingest")
    assert health.degraded() == []
    health.crashed("ingest", RuntimeError("boom"))
    assert health.degraded() == ["ingest"] and health.as_dict()["ingest"]["crashes"] == 1
    health.batch_done("ingest")
    assert health.degraded() == []
