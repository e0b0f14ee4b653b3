"""The filtered and permission-restricted phases of `gristmill bench query`: the index's labels, the rotation, the
hits check and the rows (no timings)."""

from __future__ import annotations

import numpy as np
import pytest

from streams.devtools.bench_access import PHASES, K, TooFewHits, labels, round_robin, rows_of


def test_chunks_are_labelled_with_a_public_tenth_and_acls_over_the_principals() -> None:
    rng = np.random.default_rng(0)
    labelled = [labels(1_000, rng) for _ in range(20_000)]
    acls = [acl for _, acl in labelled]
    assert 1_800 < sum(acl is None for acl in acls) < 2_200
    assert len({p for acl in acls if acl for p in acl}) == 1_000
    assert all(1 <= len(acl) <= 3 and len(set(acl)) == len(acl) for acl in acls if acl)
    kept = sum(m["year"] >= 2015 and m["lang"] == "en" for m, _ in labelled)
    assert 1_700 < kept < 2_300  # the filter keeps about 10%
    assert 150 < sum(m["year"] >= 2015 and m["lang"] == "en" and acl is None for m, acl in labelled) < 250  # ~1%


def test_each_query_visits_every_phase_in_a_rotating_order_and_must_get_k_hits() -> None:
    order: list[str] = []
    calls = {name: (lambda query, name=name: order.append(name) or K) for name in ("a", "b", "c")}
    assert {name: len(ms) for name, ms in round_robin(calls, ["q1", "q2", "q3"]).items()} == {"a": 3, "b": 3, "c": 3}
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    with pytest.raises(TooFewHits):
        round_robin({"short": lambda query: K - 1}, ["q"])


def test_each_phase_is_checked_against_the_unrestricted_p50() -> None:
    measured = {name: [10.0] * 50 for name in PHASES}
    measured["filtered"] = [12.0] * 50
    measured["restricted"] = [14.0] * 50  # 1.4x: missed
    rows = rows_of(100_000, 1_000, measured, measured)
    met = {(row.measure.split(": ")[0].rsplit(", ", 1)[1], row.measure.rsplit("p99, ", 1)[1]): row.met
           for row in rows}
    for label in ("encode + search", "store search alone"):
        assert {phase: ok for (where, phase), ok in met.items() if where == label} == {
            "unrestricted (ms)": None, "public only (ms)": True, "filtered (ms)": True, "restricted (ms)": False,
            "filtered + restricted (ms)": True}
