from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from streams.state.edge_store import EdgeVectorStore
from streams.state.errors import StoreError
from streams.state.faults import FaultInjectingStore, FaultPlan
from streams.state.store import ChunkPoint


def write_plan(path: Path, plan: dict[str, object], stamp: float) -> None:
    path.write_text(json.dumps(plan))
    os.utime(path, (stamp, stamp))  # the plan is re-read when its modification time changes


def test_faults_switch_on_and_off_at_runtime(tmp_path: Path) -> None:
    slept: list[float] = []
    plan_path = tmp_path / "faults.json"
    store = FaultInjectingStore(EdgeVectorStore(tmp_path / "q", "c", 4), FaultPlan(plan_path), sleep=slept.append)
    point = ChunkPoint("a", 0, "t", 1, "h", "v1", np.array([1, 0, 0, 0], dtype=np.float32))
    write_plan(plan_path, {"mode": "error", "operations": ["upsert_chunks"]}, 1000)
    with pytest.raises(StoreError, match="injected fault: upsert_chunks failed"):
        store.upsert_chunks([point])
    assert store.count_chunks() == 0  # other operations are untouched
    write_plan(plan_path, {"mode": "timeout", "delay_s": 0.25}, 2000)
    with pytest.raises(StoreError, match="timed out"):
        store.count_chunks()
    write_plan(plan_path, {"mode": "slow", "delay_s": 0.1}, 3000)
    store.upsert_chunks([point])
    assert slept == [0.25, 0.1]
    write_plan(plan_path, {"mode": "bogus"}, 4000)  # an invalid plan is ignored, the last good one stays
    assert store.count_chunks() == 1 and slept == [0.25, 0.1, 0.1]
    plan_path.unlink()  # no plan, no faults
    assert store.count_chunks() == 1 and slept == [0.25, 0.1, 0.1]
    store.close()
