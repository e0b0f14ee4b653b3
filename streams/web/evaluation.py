"""What `GET /evaluation` and `GET /experiment` answer (the CLI and the dashboard read the same bodies)."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from streams.ml.evaluation import GROUP_KEYS, SLICE_KEYS, summarize
from streams.ml.experiments import Guardrails, report
from streams.web.parameters import DECIMAL_NUMBER, InvalidParameter, bounded, names, seconds

if TYPE_CHECKING:
    from streams.shared import Shared

RELATIVE = re.compile(r"^([0-9]{1,12}(?:\.[0-9]{1,9})?)([smhd])$")
TEN_YEARS_S = 10 * 366 * 86400
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """`1h`, `30m`, `7d` ago (at most ten years); epoch seconds; or an ISO 8601 time (`InvalidParameter`
    otherwise)."""
    if match := RELATIVE.match(text.strip()):
        return now - bounded(float(match[1]) * UNITS[match[2]], "since", 0, TEN_YEARS_S)
    if DECIMAL_NUMBER.fullmatch(text):
        return bounded(float(text), "since (epoch seconds)", 0, now + TEN_YEARS_S)
    try:
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError, OSError):
        raise InvalidParameter(f"since must be like 1h, 30m, 7d, epoch seconds or an ISO time, not {text[:40]!r}") \
            from None


#: The parameters `GET /evaluation` reads.
EVALUATION_PARAMETERS = frozenset({"by", "since", "window", "slices"})


def evaluation_query(params: Mapping[str, str], now: float | None = None) -> dict[str, Any]:
    """`by` (comma-separated: version, arm, slice, window, experiment), `since` (default 24h), `window` (seconds
    from 1 to a year; with by=window), `slices` (comma-separated: length, source, segment); each at most once
    (`InvalidParameter` otherwise). `gristmill evaluation` checks its options with this before it asks."""
    now = time.time() if now is None else now
    by = names(params.get("by", "version,arm"), "by", GROUP_KEYS)
    slices = names(params.get("slices", ",".join(SLICE_KEYS)), "slices", SLICE_KEYS, empty=True)
    window_s = (seconds(params["window"], "window", 1, 366 * 86400) if "window" in params
                else (3600.0 if "window" in by else None))
    return {"by": by, "since": parse_since(params.get("since", "24h"), now), "slices": slices, "window_s": window_s}


def evaluation_body(shared: Shared, by: Sequence[str], since: float, slices: Sequence[str],
                    window_s: float | None) -> dict[str, Any]:
    store = shared.evaluation
    found = store.judged_answers(since=since)
    return {"by": list(by), "since": since, "window_s": window_s,
            "rows": summarize(found.answers, found.judgements, by, slices, window_s),
            "offline": store.offline(),
            "experiments": [e.as_dict() for e in store.experiments(shared.settings.model_name, limit=10)]}


def experiment_body(shared: Shared) -> dict[str, Any]:
    """The model's latest experiment with its evidence, the decision it would reach now and its per-slice metrics;
    the ones before it."""
    experiments = shared.evaluation.experiments(shared.settings.model_name, limit=10)
    rails = Guardrails.of(shared.settings)
    latest = report(shared.evaluation, experiments[0], rails) if experiments else None
    return {"latest": latest, "history": [e.as_dict() for e in experiments[1:]],
            "guardrails": dict(rails.__dict__)}
