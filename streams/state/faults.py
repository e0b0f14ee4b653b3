"""Fault injection for failure drills: a `VectorStore` wrapper that fails, times out or slows down on demand.

Enabled by `GRISTMILL_FAULTS_FILE`; the JSON file is re-read whenever it changes, so faults can be switched on
and off while the worker runs: `{"mode": "error" | "timeout" | "slow" | "ok", "delay_s": 0.5,
"operations": ["upsert_chunks", ...], "doc_ids": ["d1", ...]}` (all operations when `operations` is absent; with
`doc_ids`, only operations on those documents fail: a drill can withhold one chosen batch).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from schemas import ScalarValue
from streams.state.errors import StoreError
from streams.state.store import (
    KEEP_ACL,
    PUBLIC,
    Access,
    ChunkPoint,
    DocumentState,
    KeepAcl,
    SearchHit,
    VectorQuery,
    VectorStore,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
MODES = {"ok", "error", "timeout", "slow"}


class FaultPlan:
    """The current fault, from a JSON file watched by modification time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: float | None = None
        self._plan: dict[str, Any] = {"mode": "ok"}

    def current(self) -> dict[str, Any]:
        with self._lock:
            try:
                stamp = self.path.stat().st_mtime
            except FileNotFoundError:
                self._stamp, self._plan = None, {"mode": "ok"}
                return self._plan
            if stamp != self._stamp:
                try:
                    plan = json.loads(self.path.read_text(encoding="utf-8"))
                    if plan.get("mode") not in MODES:
                        raise ValueError(f"mode must be one of {sorted(MODES)}")
                    self._plan = plan
                    log.warning("fault injection now %s", plan)
                except (ValueError, OSError) as exc:
                    log.error("ignoring fault plan %s: %s", self.path, exc)
                self._stamp = stamp
            return self._plan


class FaultInjectingStore:
    """Delegates to `inner` except where the plan injects a fault."""

    def __init__(self, inner: VectorStore, plan: FaultPlan, sleep: Callable[[float], None] = time.sleep) -> None:
        self.inner = inner
        self.plan = plan
        self._sleep = sleep

    def _run(self, operation: str, call: Callable[[], T], doc_ids: Sequence[str] = ()) -> T:
        plan = self.plan.current()
        targeted = "doc_ids" not in plan or bool(set(plan["doc_ids"]) & set(doc_ids))
        if plan["mode"] != "ok" and operation in plan.get("operations", [operation]) and targeted:
            delay = float(plan.get("delay_s", 0.5))
            if plan["mode"] == "error":
                raise StoreError(f"injected fault: {operation} failed")
            if plan["mode"] == "timeout":
                self._sleep(delay)
                raise StoreError(f"injected fault: {operation} timed out after {delay}s")
            self._sleep(delay)
        return call()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def upsert_chunks(self, points: Sequence[ChunkPoint]) -> None:
        self._run("upsert_chunks", lambda: self.inner.upsert_chunks(points), [p.doc_id for p in points])

    def delete_chunks(self, doc_id: str, from_chunk: int = 0) -> None:
        self._run("delete_chunks", lambda: self.inner.delete_chunks(doc_id, from_chunk), [doc_id])

    def set_chunk_version(self, doc_id: str, version: int, metadata: Mapping[str, ScalarValue] | None = None,
                          acl: Sequence[str] | KeepAcl | None = KEEP_ACL) -> None:
        self._run("set_chunk_version", lambda: self.inner.set_chunk_version(doc_id, version, metadata, acl),
                  [doc_id])

    @property
    def modes(self) -> frozenset[str]:
        return self.inner.modes

    def search(self, query: VectorQuery, limit: int, filter_: Mapping[str, object] | None = None,
               access: Access = PUBLIC) -> list[SearchHit]:
        return self._run("search", lambda: self.inner.search(query, limit, filter_, access))

    def chunks(self, doc_id: str, with_vectors: bool = False) -> list[ChunkPoint]:
        return self._run("chunks", lambda: self.inner.chunks(doc_id, with_vectors))

    def all_chunks(self, with_vectors: bool = False) -> list[ChunkPoint]:
        return self._run("all_chunks", lambda: self.inner.all_chunks(with_vectors))

    def count_chunks(self) -> int:
        return self._run("count_chunks", self.inner.count_chunks)

    def get_documents(self, doc_ids: Sequence[str]) -> dict[str, DocumentState]:
        return self._run("get_documents", lambda: self.inner.get_documents(doc_ids), doc_ids)

    def put_documents(self, states: Sequence[DocumentState]) -> None:
        self._run("put_documents", lambda: self.inner.put_documents(states), [s.doc_id for s in states])

    def count_documents(self, include_deleted: bool = False) -> int:
        return self._run("count_documents", lambda: self.inner.count_documents(include_deleted))

    def all_documents(self) -> list[DocumentState]:
        return self._run("all_documents", self.inner.all_documents)

    def compact(self) -> bool:
        return self._run("compact", self.inner.compact)

    def close(self) -> None:
        self.inner.close()
