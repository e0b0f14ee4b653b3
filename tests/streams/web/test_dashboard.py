from __future__ import annotations

import pytest
from prometheus_client import Histogram

from streams.web.dashboard import histogram_quantile

PROBE = Histogram("gristmill_test_probe_seconds", "test only", ["via"], buckets=(0.01, 0.1, 1.0))


def test_histogram_quantile_interpolates_like_promql() -> None:
    for value in [0.005] * 50 + [0.05] * 50:
        PROBE.labels("a").observe(value)
    assert histogram_quantile("gristmill_test_probe_seconds", 0.5, via="a") == pytest.approx(0.01)
    assert histogram_quantile("gristmill_test_probe_seconds", 0.75, via="a") == pytest.approx(0.055)
    assert histogram_quantile("gristmill_test_probe_seconds", 0.5, via="missing") is None
