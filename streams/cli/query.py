"""`gristmill search`, `ask` and `eval`: queries over HTTP, through Kafka, and scored on a BEIR folder."""

from __future__ import annotations

import urllib.error
import urllib.parse
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from streams.cli.context import console, get_json, load_settings, print_hits, progress_bar, require_kafka, with_stack


def search(text: str, k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 5,
           source: Annotated[str | None, typer.Option(help="Only chunks from this source.")] = None) -> None:
    """Search the running index over HTTP and print the hits."""
    _, url = with_stack(load_settings())
    params = {"q": text, "k": k, **({"source": source} if source else {})}
    try:
        print_hits(get_json(f"{url}/search?" + urllib.parse.urlencode(params)))
    except urllib.error.HTTPError as exc:
        console.print(f"[red]search failed ({exc.code}):[/red] {exc.read().decode(errors='replace')}")
        raise typer.Exit(1) from exc
    except (urllib.error.URLError, OSError) as exc:
        console.print(f"[red]no HTTP API at {url}:[/red] {exc} (is `gristmill up` running?)")
        raise typer.Exit(1) from exc


def ask(text: str, k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 5,
        source: Annotated[str | None, typer.Option(help="Only chunks from this source.")] = None,
        timeout: Annotated[float, typer.Option(help="Seconds to wait for the response.")] = 30.0) -> None:
    """Send a query through the `queries` topic and wait for its response on `responses`."""
    from streams.roundtrip import QueryRoundTrip

    settings = require_kafka(load_settings())
    with QueryRoundTrip(settings) as roundtrip:
        query_id = roundtrip.send(text, k, {"source": source} if source else None)
        try:
            answer = roundtrip.wait([query_id], timeout)[query_id]
        except TimeoutError as exc:
            console.print(f"[red]no response in {timeout}s[/red] (is a worker with the query agent running?)")
            raise typer.Exit(1) from exc
    response = answer.response
    print_hits({**response, "query": text})
    console.print(f"query_id {query_id}  round trip {answer.round_trip_s * 1000:.1f} ms  "
                  f"index {response['index_version']}  cached {response['cached']}")


def evaluate(
    beir_dir: Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv.")],
    reference: Annotated[bool, typer.Option(help="Also score sentence-transformers exact search.")] = False,
    split: Annotated[str, typer.Option(help="qrels split to use.")] = "test",
    top_k: Annotated[int, typer.Option(help="Chunks requested per query.")] = 200,
) -> None:
    """Ingest a BEIR corpus through Kafka, query it through Kafka, and print retrieval metrics."""
    from streams.devtools.beir import ingest_corpus, load_beir, query_pipeline, reference_scores
    from streams.ml.ranking import percentile
    from streams.ml.serving import open_registry

    settings = require_kafka(load_settings())
    _, url = with_stack(settings)
    try:
        dataset = load_beir(beir_dir, split)
    except (OSError, ValueError, KeyError) as exc:
        console.print(f"[red]cannot read {beir_dir}:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{len(dataset.corpus)} documents, {len(dataset.queries)} judged queries")
    with progress_bar() as progress:
        task = progress.add_task("corpus -> documents", total=len(dataset.corpus))
        took = ingest_corpus(settings, url, dataset, on_sent=lambda n: progress.advance(task, n))
    console.print(f"indexed in {took:.1f}s; querying through Kafka...")
    run = query_pipeline(settings, dataset, top_k=top_k)
    table = Table(title=f"gristmill eval {beir_dir.name}")
    table.add_column("metric")
    table.add_column("pipeline", justify="right")
    ref = None
    if reference:
        model = open_registry(settings).current()
        if model is None:
            console.print("[red]no model in the registry for the reference[/red]")
            raise typer.Exit(1)
        ref = reference_scores(model.source, dataset)
        table.add_column("sentence-transformers exact", justify="right")
        table.add_column("difference", justify="right")
    for metric, value in run.scores.items():
        extra = [f"{ref[metric]:.4f}", f"{value - ref[metric]:+.4f}"] if ref else []
        table.add_row(metric, f"{value:.4f}", *extra)
    for name, values in (("round trip ms", run.round_trip_ms), ("server ms", run.server_ms)):
        table.add_row(f"{name} p50/p95/p99",
                      "/".join(f"{percentile(values, q):.1f}" for q in (50, 95, 99)), *([""] * (2 if ref else 0)))
    console.print(table)
    if ref and run.scores["nDCG@10"] < ref["nDCG@10"] - 0.01:
        console.print("[red]pipeline nDCG@10 is more than 0.01 below the reference[/red]")
        raise typer.Exit(3)
