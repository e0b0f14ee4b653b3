"""The worker's crash path: where a crashed batch is read again from."""

from __future__ import annotations

from types import SimpleNamespace

from streams.app import redelivery


def event(partition: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(tp=("documents", partition), offset=offset))


def test_a_crashed_batch_is_read_again_from_its_lowest_offsets_or_lower_unhandled_ones() -> None:
    batch = [event(0, 12), event(0, 10), event(1, 5)]
    unhandled = {("documents", 0): 10, ("documents", 1): 3, ("documents", 2): 40}  # the next batch, filling
    assert redelivery(batch, unhandled) == {("documents", 0): 10, ("documents", 1): 3, ("documents", 2): 40}
    assert redelivery(batch, {}) == {("documents", 0): 10, ("documents", 1): 5}
