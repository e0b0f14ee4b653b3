"""The commit gate: commits never pass a record that was delivered and not handled."""

from __future__ import annotations

from streams.commit_gate import CommitGate

TP = ("documents", 3)


def deliver(gate: CommitGate, offsets: range) -> None:
    for offset in offsets:
        gate.delivered(TP, offset)


def ack(gate: CommitGate, offsets: range) -> None:
    for offset in offsets:
        gate.acknowledged(TP, offset)


def test_nothing_handled_nothing_to_commit_and_all_handled_commits_past_the_last() -> None:
    gate = CommitGate()
    assert gate.safe_offset(TP) is None
    deliver(gate, range(0, 5))
    ack(gate, range(0, 5))
    assert gate.safe_offset(TP) == 5


def test_a_withheld_first_batch_holds_commits_at_its_start_whatever_comes_after() -> None:
    gate = CommitGate()  # faust committed 4 here: offsets 0-2 withheld, 3 handled, nothing committed before
    deliver(gate, range(0, 4))
    for offset in range(0, 3):
        gate.withhold(TP, offset)
    ack(gate, range(0, 4))
    assert gate.safe_offset(TP) == 0 and gate.pending(TP) == 3


def test_a_withheld_single_record_batch_between_two_good_ones() -> None:
    gate = CommitGate()
    deliver(gate, range(0, 9))
    gate.withhold(TP, 4)
    ack(gate, range(0, 9))
    assert gate.safe_offset(TP) == 4


def test_a_re_delivered_record_that_is_handled_opens_the_gate() -> None:
    gate = CommitGate()
    deliver(gate, range(0, 6))
    gate.withhold(TP, 2)
    ack(gate, range(0, 6))
    gate.rewind(TP, 2)  # read again from the withheld record
    assert gate.safe_offset(TP) == 2  # still not past it before its new delivery is handled ...
    deliver(gate, range(2, 6))
    ack(gate, range(2, 6))
    assert gate.safe_offset(TP) == 6  # ... and, once handled again, past everything


def test_partitions_given_up_are_forgotten() -> None:
    gate = CommitGate()
    deliver(gate, range(0, 3))
    gate.withhold(TP, 0)
    ack(gate, range(0, 3))
    gate.forget([TP])
    assert gate.safe_offset(TP) is None and gate.pending(TP) == 0


def test_a_batch_that_ends_after_its_partition_was_given_up_is_not_committed_past() -> None:
    gate = CommitGate()  # a stop: the partition is revoked while a batch is still being encoded
    deliver(gate, range(0, 4))
    ack(gate, range(0, 2))
    assert gate.safe_offset(TP) == 2
    gate.forget([TP])
    ack(gate, range(2, 4))  # the batch ends (unwritten) after the revocation and is acknowledged
    assert gate.safe_offset(TP) is None  # nothing to commit: reading restarts at 2, the last commit


def test_a_crashed_batch_is_read_again_from_below_itself_and_the_batch_filling_behind_it() -> None:
    gate, other = CommitGate(), ("documents", 1)
    deliver(gate, range(0, 10))  # 0-4: the batch that crashed; 5-9: the next batch, delivered, never handed over
    gate.delivered(other, 7)  # on another partition, only in the next batch
    ack(gate, range(0, 3))
    for offset in range(3, 5):
        gate.withhold(TP, offset)
    ack(gate, range(3, 5))
    assert gate.lowest_pending() == {TP: 3, other: 7}
    ack(gate, range(5, 10))
    gate.acknowledged(other, 7)
    assert gate.lowest_pending() == {TP: 3}  # the withheld ones stay until read again
