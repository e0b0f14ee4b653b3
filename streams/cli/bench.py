"""`gristmill bench ...`: each benchmark against its baseline, measured in the same run."""

from __future__ import annotations

from typing import Annotated

import typer

from streams.cli.context import console, load_settings


def bench_ingest(
    docs: Annotated[int, typer.Option(help="Documents in each pipeline run.")] = 200,
    runs: Annotated[int, typer.Option(help="Pipeline runs (the median is reported, with min and max).")] = 3,
    profile: Annotated[bool, typer.Option(help="Also show time per stage and a py-spy profile of the worker.")] = False,
    naive: Annotated[bool, typer.Option(help="Also the loops a user writes by hand (per record, batched).")] = False,
    edits: Annotated[bool, typer.Option(help="Only what edits cost: long documents ingested, then a one-sentence "
                                             "edit in the middle of each (docs/s and chunks embedded per edit).")
                     ] = False,
    edit_documents: Annotated[int, typer.Option(help="Documents of the --edits run.", min=1)] = 120,
    edit_words: Annotated[int, typer.Option(help="Words per document of the --edits run.", min=50)] = 1_500,
) -> None:
    """ONNX encoder vs sentence-transformers, and the end-to-end pipeline against the bare encoder on the same
    chunks; idle CPU; with --naive, against hand-written consume-encode-upsert-commit loops; with --edits, an edit
    burst against the first ingest of the same documents."""
    if edits:
        from streams.devtools.bench_edits import run_edit_bench

        run_edit_bench(load_settings(), edit_documents, edit_words, console)
        return
    from streams.devtools.bench_ingest import run_ingest_bench

    run_ingest_bench(load_settings(), docs, console, runs=runs, profile=profile, naive=naive)


def bench_query(
    chunks: Annotated[list[int] | None, typer.Option(help="Index sizes in chunks (repeatable).")] = None,
    state_backends: Annotated[bool, typer.Option(help="At the smallest size, also the state stores in PostgreSQL "
                                                      "(a throwaway server) beside SQLite: HTTP and Kafka latency, "
                                                      "GET /evaluation, its query plans.")] = True,
    evaluation_answers: Annotated[int, typer.Option(min=1, help="Answers (over 24 h, one in five judged) in each "
                                                               "backend's evaluation store for GET /evaluation.")
                                  ] = 100_000,
    principals: Annotated[int, typer.Option(min=3, help="Distinct principals in the acls of the index that "
                                                        "filtered and permission-restricted searches run on.")
                          ] = 1_000,
    access_only: Annotated[bool, typer.Option(help="Only the filtered and permission-restricted searches (at the "
                                                   "largest size).")] = False,
) -> None:
    """Dense and hybrid HTTP latency and QPS at each index size, the Kafka round trip, against a per-query
    baseline; the state in PostgreSQL beside SQLite; at the largest size, filtered and permission-restricted
    hybrid searches beside unrestricted ones — side by side in the same run."""
    from streams.devtools.bench_query import run_query_bench

    run_query_bench(load_settings(), chunks or [10_000, 100_000], console, state_backends=state_backends,
                    evaluation_answers=evaluation_answers, principals=principals, access_only=access_only)


def bench_monitor(
    sizes: Annotated[list[int] | None, typer.Option("--size", help="Window sizes (repeatable).")] = None,
) -> None:
    """Great Expectations cost and monitor lag per window."""
    from streams.devtools.bench_monitor import run_monitor_bench

    run_monitor_bench(load_settings(), sizes or [1_000, 10_000], console)


def bench_flywheel(
    pairs: Annotated[int, typer.Option(help="Positive feedback pairs in the retrain.")] = 400,
    documents: Annotated[int, typer.Option(help="Documents in the index (the held-out evaluation ranks over it, "
                                                "the rollout re-embeds it).")] = 2_000,
) -> None:
    """Feedback to a served model: the retrain's phases (before and after the held-out evaluation reused the
    index), the rollout next to first-time indexing, and the two as one figure."""
    from streams.devtools.bench_flywheel import run_flywheel_bench

    run_flywheel_bench(load_settings(), pairs, documents, console)


def bench_experiments(queries: Annotated[int, typer.Option(help="Queries in the stream.")] = 600) -> None:
    """Judged queries a split and an interleaving experiment need to decide, on the same stream and users."""
    from streams.devtools.bench_experiments import run_experiments_bench

    run_experiments_bench(queries, console)


def bench_badinput(
    records: Annotated[int, typer.Option(help="Document records per run.")] = 100_000,
    bad_share: Annotated[float, typer.Option(help="Share of bad records (30 kinds) in the second run.")] = 0.1,
) -> None:
    """Throughput with bad records mixed in vs a clean run of the same size; nothing lost either way."""
    from streams.devtools.bench_reliability import run_badinput_bench

    run_badinput_bench(load_settings(), records, bad_share, console)


def bench_soak(minutes: Annotated[float, typer.Option(help="Soak duration.")] = 10.0) -> None:
    """Half the maximum ingest rate plus HTTP searches: RSS growth, consumer lag, error logs."""
    from streams.devtools.bench_reliability import run_soak_bench

    run_soak_bench(load_settings(), minutes, console)
