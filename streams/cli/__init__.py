"""`gristmill` command line: run the stack, produce events, search, the model lifecycle, dead letters, benchmarks.

Each topic's commands live in their own module; this one assembles them into one Typer app.
"""

from __future__ import annotations

import os
import sys

import typer
from confluent_kafka import KafkaException

from schemas.errors import GristmillError
from streams.cli import bench, deadletter, experiments, models, produce, query, sources, stack, state
from streams.cli.context import console, styled

app = typer.Typer(help="gristmill: a streaming pipeline that keeps a semantic-search index fresh.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
produce_app = typer.Typer(help="Produce events to gristmill's topics.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks, each against a baseline measured in the same run.", no_args_is_help=True)
deadletter_app = typer.Typer(help="Inspect dead letters and replay fixed records.", no_args_is_help=True)
experiment_app = typer.Typer(help="Live experiments of a candidate version: shadow, split, interleave.",
                             no_args_is_help=True)
dataset_app = typer.Typer(help="Write evaluation sets in BEIR format for `gristmill eval`.", no_args_is_help=True)
app.add_typer(produce_app, name="produce")
app.add_typer(bench_app, name="bench")
app.add_typer(deadletter_app, name="deadletter")
app.add_typer(experiment_app, name="experiment")
app.add_typer(state.state_app, name="state")
app.add_typer(dataset_app, name="dataset")
sources_app = typer.Typer(help="Topics of other shapes (Debezium, JSON rows) mapped to documents.",
                          no_args_is_help=True)
app.add_typer(sources_app, name="sources")
sources_app.command("check")(sources.check)

for command in (stack.up, stack.demo, stack.status, query.search, query.ask, models.retrain, models.rollback,
                models.promote, models.reindex, models.models):
    app.command()(command)
app.command("eval")(query.evaluate)
app.command("evaluation")(experiments.evaluation)
for command in (experiments.start, experiments.stop, experiments.promote, experiments.status):
    experiment_app.command()(command)
dataset_app.command("identifiers")(query.dataset_identifiers)
produce_app.command("documents")(produce.produce_documents)
produce_app.command("feedback")(produce.produce_feedback)
deadletter_app.command("inspect")(deadletter.deadletter_inspect)
deadletter_app.command("replay")(deadletter.deadletter_replay)
for name in ("ingest", "query", "monitor", "flywheel", "experiments", "badinput", "soak"):
    bench_app.command(name)(getattr(bench, f"bench_{name}"))


def main() -> None:
    """Run a command; an error ends it with one line and exit status 1, never a traceback (`GRISTMILL_DEBUG=1`
    shows the traceback of an unexpected one)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        app()
    except (GristmillError, KafkaException, OSError) as exc:
        console.print(styled("error: ", "red", exc), soft_wrap=True)
        sys.exit(1)
    except Exception as exc:
        if os.environ.get("GRISTMILL_DEBUG"):
            raise
        console.print(styled("error: ", "red", f"{type(exc).__name__}: {exc} (GRISTMILL_DEBUG=1 shows where)"),
                      soft_wrap=True)
        sys.exit(1)
