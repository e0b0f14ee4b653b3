"""gristmill's own commit gate: per partition, the offset below which every delivered record was handled.

faust commits the highest contiguous run of acknowledged offsets, and only guards the gap at the head of that run
once something was committed (and offset 0 counts as nothing), so a batch that was withheld (not handled: the
worker stopped mid-write, an agent crashed) could be passed by the commits of later batches and never be
re-delivered. The gate counts what was *delivered* to the agents as well: a commit may go only up to the lowest
delivered offset that was not handled, whatever came after it.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Hashable, Iterable


class CommitGate:
    """Thread-safe bookkeeping of delivered, handled and withheld offsets, per partition (`tp`: any hashable)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Hashable, set[int]] = defaultdict(set)  # delivered, not handled
        self._handled: dict[Hashable, int] = {}  # highest handled offset
        self._withheld: set[tuple[Hashable, int]] = set()  # not handled although their acknowledgement comes

    def delivered(self, tp: Hashable, offset: int) -> None:
        with self._lock:
            self._pending[tp].add(offset)

    def withhold(self, tp: Hashable, offset: int) -> None:
        """The record's processing did not finish: its coming acknowledgement must not count."""
        with self._lock:
            if offset in self._pending[tp]:
                self._withheld.add((tp, offset))

    def acknowledged(self, tp: Hashable, offset: int) -> bool:
        """The record was acknowledged; True if that counts as handled: it was not withheld, and it was delivered
        since the partition was last (re)assigned (a batch that ends after its partition was given up, as at a
        stop, must not move the commit past itself: it is read again from the committed offset)."""
        with self._lock:
            if (tp, offset) in self._withheld:
                self._withheld.discard((tp, offset))
                return False
            if offset not in self._pending.get(tp, ()):
                return False
            self._pending[tp].discard(offset)
            self._handled[tp] = max(self._handled.get(tp, -1), offset)
            return True

    def safe_offset(self, tp: Hashable) -> int | None:
        """The offset a commit may go up to: the lowest pending one, or past the highest handled; None if nothing
        was handled yet."""
        with self._lock:
            pending = self._pending.get(tp)
            if pending:
                return min(pending)
            handled = self._handled.get(tp)
            return None if handled is None else handled + 1

    def lowest_pending(self) -> dict[Hashable, int]:
        """The lowest delivered, unhandled offset of each partition that has one (where to read again from)."""
        with self._lock:
            return {tp: min(offsets) for tp, offsets in self._pending.items() if offsets}

    def pending(self, tp: Hashable) -> int:
        """How many delivered records of `tp` are not handled (yet, or ever: withheld)."""
        with self._lock:
            return len(self._pending.get(tp, ()))

    def rewind(self, tp: Hashable, offset: int) -> None:
        """The partition is read again from `offset`: what is pending from there on stays pending until its new
        delivery is handled; withheld marks are cleared, so that acknowledgement counts."""
        with self._lock:
            self._withheld = {(t, o) for t, o in self._withheld if t != tp or o < offset}

    def forget(self, tps: Iterable[Hashable]) -> None:
        """Partitions given up or (re)assigned: their reading restarts from the committed offset."""
        with self._lock:
            for tp in tps:
                self._pending.pop(tp, None)
                self._handled.pop(tp, None)
                self._withheld = {(t, o) for t, o in self._withheld if t != tp}
