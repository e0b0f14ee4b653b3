"""`gristmill experiment start|stop|promote|status` and `gristmill evaluation`: live experiments and the online
metrics of every version, arm and slice."""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any, Literal

import typer
from rich.table import Table
from rich.text import Text

from streams.cli.context import console, fail, load_settings, require_kafka, stack_json, untrusted, with_stack

Mode = Literal["shadow", "split", "interleave"]


def _stack_json(path: str) -> Any:
    settings, url = with_stack(load_settings())
    return stack_json(f"{url}{path}", path.split("?")[0], api_key=settings.api_key)


def _number(value: Any, digits: int = 3) -> str:
    return "-" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def start(version: str,
          mode: Annotated[Mode, typer.Option(help="shadow: answered off the served path; split: a share of users "
                                                  "gets the candidate; interleave: team-draft lists.")] = "shadow",
          fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of queries (shadow, interleave) "
                                                                         "or users (split).")] = 0.1) -> None:
    """Start a live experiment of VERSION against the serving version (one per model at a time)."""
    from streams.ml.experiments import start_update
    from streams.ml.serving import open_registry
    from streams.produce import produce_record
    from streams.state.errors import ExperimentConflict, UnknownModelVersion
    from streams.state.evaluation_store import EvaluationStore
    from streams.state_databases import open_state_database

    settings = require_kafka(load_settings())
    if fraction <= 0:
        raise fail("--fraction must be above 0", status=2)
    store = EvaluationStore(open_state_database(settings, "evaluation store"))
    try:
        update = start_update(open_registry(settings), store, version, mode, fraction)
    except (UnknownModelVersion, ExperimentConflict) as exc:
        raise fail("cannot start: ", exc) from exc
    finally:
        store.close()
    produce_record(settings, "model-updates", settings.model_name, update)
    assert update.experiment is not None
    console.print(untrusted(f"experiment {update.experiment.id} requested: {version} vs {update.previous_version}, "
                            f"{mode} at {fraction:g} (`gristmill experiment status` follows it)"))


def _end(action: Literal["stop", "promote"]) -> None:
    from streams.ml.experiments import end_update
    from streams.produce import produce_record
    from streams.state.errors import NoExperiment
    from streams.state.evaluation_store import EvaluationStore
    from streams.state_databases import open_state_database

    settings = require_kafka(load_settings())
    store = EvaluationStore(open_state_database(settings, "evaluation store"))
    try:
        update = end_update(store, settings.model_name, action, f"{action} by an operator")
    except NoExperiment as exc:
        raise fail("cannot end it: ", exc) from exc
    finally:
        store.close()
    produce_record(settings, "model-updates", settings.model_name, update)
    console.print(untrusted(f"{action} of experiment {update.experiment.id if update.experiment else ''} requested "
                            f"({update.version})"))


def stop() -> None:
    """End the running experiment; the candidate never serves (or stops challenging)."""
    _end("stop")


def promote() -> None:
    """End the running experiment by rolling its candidate out now, whatever the evidence says."""
    _end("promote")


def status() -> None:
    """The latest experiment: state, decision, evidence, and its metrics per arm and slice."""
    body = _stack_json("/experiment")
    latest = body.get("latest")
    if not latest:
        console.print("no experiment yet (`gristmill experiment start VERSION --mode shadow`)")
        return
    e = latest["experiment"]
    console.print(Text.assemble(
        untrusted(f"experiment {e['id']}: {e['version']} vs {e['baseline']}, {e['mode']} at {e['fraction']:g} — "),
        (untrusted(e["state"]).plain, "bold"),
        untrusted(f" ({e['decision']}: {e['reason']})" if e.get("decision") else "")), soft_wrap=True)
    if latest.get("would_decide"):
        console.print(untrusted(f"would decide now: {latest['would_decide']['action']} "
                                f"({latest['would_decide']['reason']})"), soft_wrap=True)
    evidence = Table("evidence", "value", title="evidence (candidate vs serving)")
    for key, value in sorted((latest.get("evidence") or {}).items()):
        evidence.add_row(untrusted(key), untrusted(_number(value, 4)))
    console.print(evidence)
    print_rows(latest.get("slices") or [], ["arm", "slice"], "per arm and slice")


def print_rows(rows: list[dict[str, Any]], by: list[str], title: str) -> None:
    table = Table(*(untrusted(b).plain for b in by), "queries", "judged", "positive rate [95% CI]", "MRR@10",
                  "nDCG@10", "p50 ms", "p99 ms", "overlap@10", "rank corr.", title=untrusted(title))
    for row in rows:
        ci = row.get("positive_rate_ci")
        rate = "-" if row.get("positive_rate") is None else (
            f"{row['positive_rate']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{row['positive_rate']:.3f}")
        cells = [*(row.get(k) for k in by), row["queries"], row["judged"], rate, _number(row.get("mrr@10")),
                 _number(row.get("ndcg@10")), _number(row.get("latency_p50_ms"), 1),
                 _number(row.get("latency_p99_ms"), 1), _number(row.get("overlap@10")),
                 _number(row.get("rank_correlation"))]
        table.add_row(*(untrusted(cell) for cell in cells))
    console.print(table)


def evaluation(by: Annotated[str, typer.Option(help="Group by some of: version, arm, slice, window, "
                                                    "experiment.")] = "version,arm",
               since: Annotated[str, typer.Option(help="1h, 30m, 7d, epoch seconds or an ISO time.")] = "24h",
               slices: Annotated[str, typer.Option(help="With by=slice: length, source, segment.")] = (
                   "length,source,segment"),
               window: Annotated[float | None, typer.Option(help="Seconds per window (with by=window).")] = None
               ) -> None:
    """Online metrics per version, arm, slice and window, and each version's offline held-out metrics."""
    from streams.web.evaluation import evaluation_query
    from streams.web.parameters import InvalidParameter

    params = {"by": by, "since": since, "slices": slices, **({"window": str(window)} if window is not None else {})}
    try:
        evaluation_query(params)  # as the worker will check them, before asking
    except InvalidParameter as exc:
        raise fail("invalid option: ", exc, status=2) from None
    body = _stack_json(f"/evaluation?{urllib.parse.urlencode(params)}")
    print_rows(body["rows"], body["by"], f"online metrics since {since}")
    offline = body.get("offline") or {}
    if offline:
        table = Table("version", "held-out nDCG@10", "MRR@10", "base nDCG@10", "queries",
                      title="offline (trainer's held-out evaluation)")
        for version, m in offline.items():
            table.add_row(*(untrusted(cell) for cell in (
                version, _number(m.get("held_out_nDCG@10"), 4), _number(m.get("held_out_MRR@10"), 4),
                _number(m.get("base_held_out_nDCG@10"), 4), _number(m.get("held_out_queries"), 0))))
        console.print(table)
