"""The filtered and permission-restricted phases of `gristmill bench query`: the index's labels and the rows (no
timings)."""

from __future__ import annotations

import numpy as np

from streams.devtools.bench_access import PHASES, labels, rows_of


def test_filler_is_labelled_with_a_public_tenth_and_acls_over_the_principals() -> None:
    rng = np.random.default_rng(0)
    labelled = [labels(n, 1_000, rng) for n in range(10_000)]
    acls = [acl for _, acl in labelled]
    assert sum(acl is None for acl in acls) == 1_000
    named = {p for acl in acls if acl for p in acl}
    assert len(named) == 1_000 and all(1 <= len(acl) <= 3 and len(set(acl)) == len(acl) for acl in acls if acl)
    assert {m["lang"] for m, _ in labelled} == {"en", "de", "fr", "es"}
    assert sum(m["year"] >= 2015 and m["lang"] == "en" for m, _ in labelled) == 1_000  # the filter keeps 10%


def test_each_phase_is_checked_against_the_unrestricted_p50_end_to_end() -> None:
    measured = {name: [10.0] * 50 for name in PHASES}
    measured["filtered"] = [12.0] * 50
    measured["restricted"] = [14.0] * 50  # 1.4x: missed
    rows = rows_of(100_000, 1_000, measured, measured)
    met = {row.measure.rsplit("p99, ", 1)[1]: row.met for row in rows if "encode + search" in row.measure}
    assert met == {"unrestricted (ms)": None, "filtered (ms)": True, "restricted (ms)": False,
                   "filtered + restricted (ms)": True}
    assert all(row.met is None for row in rows if "store search alone" in row.measure)
