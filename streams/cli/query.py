"""`gristmill search`, `ask` and `eval`: queries over HTTP, through Kafka, and scored on a BEIR folder."""

from __future__ import annotations

import urllib.error
import urllib.parse
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from streams.cli.context import (
    KeyRefused,
    console,
    fail,
    load_settings,
    print_hits,
    progress_bar,
    refused,
    require_kafka,
    stack_json,
    untrusted,
    with_stack,
)

Mode = Annotated[str | None, typer.Option(help="dense, sparse or hybrid (default: the worker's, hybrid).")]
Group = Annotated[str, typer.Option(help="chunk, or doc: one hit per document.")]


def checked_search(text: str, k: int, source: str | None, mode: str | None, group: str,
                   principals: list[str] | None = None) -> None:
    """Check a search as the worker will (the `queries` contract) before it is sent: one line and exit status 2
    otherwise, rather than a dead letter and a wait."""
    from streams.web.parameters import InvalidParameter, search_request

    try:
        search_request({"query_id": "cli", "text": text, "top_k": k, "filter": {"source": source} if source else {},
                        "mode": mode, "group": group, "principals": principals},
                       {"text": "TEXT", "top_k": "-k/--top-k", "principals": "--principal"})
    except InvalidParameter as exc:
        raise fail("invalid search: ", exc, status=2) from None


def search(text: str, k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 5,
           source: Annotated[str | None, typer.Option(help="Only chunks from this source.")] = None,
           mode: Mode = None, group: Group = "chunk") -> None:
    """Search the running index over HTTP and print the hits."""
    checked_search(text, k, source, mode, group)
    settings, url = with_stack(load_settings())
    params = {"q": text, "k": k, "group": group, **({"source": source} if source else {}),
              **({"mode": mode} if mode else {})}
    print_hits(stack_json(f"{url}/search?" + urllib.parse.urlencode(params), "search", api_key=settings.api_key))


def ask(text: str, k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 5,
        source: Annotated[str | None, typer.Option(help="Only chunks from this source.")] = None,
        timeout: Annotated[float, typer.Option(help="Seconds to wait for the response.")] = 30.0,
        mode: Mode = None, group: Group = "chunk",
        principal: Annotated[list[str] | None, typer.Option(
            help="Ask for this principal (repeatable): documents whose acl names it are searched too.")] = None,
        ) -> None:
    """Send a query through the `queries` topic and wait for its response on `responses`."""
    from streams.roundtrip import QueryRoundTrip

    checked_search(text, k, source, mode, group, principal)
    settings = require_kafka(load_settings())
    with QueryRoundTrip(settings) as roundtrip:
        query_id = roundtrip.send(text, k, {"source": source} if source else None, mode=mode, group=group,
                                  principals=principal)
        try:
            answer = roundtrip.wait([query_id], timeout)[query_id]
        except TimeoutError as exc:
            raise fail(f"no response in {timeout}s", " (is a worker with the query agent running?)") from exc
    response = answer.response
    print_hits({**response, "query": text})
    console.print(untrusted(f"query_id {query_id}  round trip {answer.round_trip_s * 1000:.1f} ms  index "
                            f"{response['index_version']}  mode {response.get('mode')}  cached {response['cached']}"))


def evaluate(
    beir_dir: Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv.")],
    reference: Annotated[bool, typer.Option(help="Also score sentence-transformers exact search (dense).")] = False,
    split: Annotated[str, typer.Option(help="qrels split to use (tune on dev, report test).")] = "test",
    mode: Annotated[str, typer.Option(help="dense, sparse, hybrid, or all (each in one run).")] = "all",
    group: Annotated[str, typer.Option(help="doc (one hit per document) or chunk.")] = "doc",
    top_k: Annotated[int, typer.Option(help="Hits requested per query (documents with --group doc).")] = 100,
) -> None:
    """Ingest a BEIR corpus through Kafka, query it through Kafka in each mode, and print retrieval metrics."""
    import time

    from streams.devtools.beir import ingest_corpus, load_beir, query_pipeline, reference_scores
    from streams.ml.ranking import percentile
    from streams.ml.serving import open_registry

    modes = ["dense", "sparse", "hybrid"] if mode == "all" else [mode]
    if not set(modes) <= {"dense", "sparse", "hybrid"} or group not in ("doc", "chunk"):
        raise fail("--mode is dense, sparse, hybrid or all; --group is doc or chunk", status=2)
    for each in modes:  # what every query will carry, before anything is sent
        checked_search("a query", top_k, None, each, group)
    settings = require_kafka(load_settings())
    _, url = with_stack(settings)
    try:
        dataset = load_beir(beir_dir, split)
    except (OSError, ValueError, KeyError) as exc:
        raise fail("cannot read ", beir_dir, f": {exc}") from exc
    console.print(f"{len(dataset.corpus)} documents, {len(dataset.queries)} judged queries ({split})")
    started = time.monotonic()
    try:
        with progress_bar() as progress:
            task = progress.add_task("corpus -> documents", total=len(dataset.corpus))
            took = ingest_corpus(settings, url, dataset, on_sent=lambda n: progress.advance(task, n))
    except urllib.error.HTTPError as exc:
        if exc.code not in (401, 403):
            raise
        raise refused(KeyRefused.from_http_error(exc, f"{url}/documents/versions", settings.api_key is not None)
                      ) from None
    console.print(f"indexed in {took:.1f}s; querying through Kafka ({', '.join(modes)}, by {group})...")
    runs = {m: query_pipeline(settings, dataset, top_k=top_k, mode=m, group=group) for m in modes}
    table = Table(title=untrusted(f"gristmill eval {beir_dir.name} ({split}, by {group}, "
                                  f"{time.monotonic() - started:.0f} s)"))
    table.add_column("metric")
    for m in modes:
        table.add_column(m, justify="right")
    ref = None
    if reference:
        model = open_registry(settings).current()
        if model is None:
            raise fail("no model in the registry for the reference")
        ref = reference_scores(model.source, dataset)
        table.add_column("sentence-transformers exact (dense)", justify="right")
    for metric in next(iter(runs.values())).scores:
        table.add_row(metric, *(f"{runs[m].scores[metric]:.4f}" for m in modes),
                      *([f"{ref[metric]:.4f}"] if ref else []))
    for name, field in (("round trip ms", "round_trip_ms"), ("server ms", "server_ms")):
        table.add_row(f"{name} p50/p95/p99", *("/".join(f"{percentile(getattr(runs[m], field), q):.1f}"
                                                        for q in (50, 95, 99)) for m in modes),
                      *([""] if ref else []))
    console.print(table)
    if ref and "dense" in runs and runs["dense"].scores["nDCG@10"] < ref["nDCG@10"] - 0.01:
        raise fail("the pipeline's dense nDCG@10 is more than 0.01 below the reference", status=3)


def dataset_identifiers(
    out: Annotated[Path, typer.Argument(help="Folder to write the BEIR-format set into (created).")],
    seed: Annotated[int, typer.Option(help="Another seed, another set (tune on one, report another).")] = 0,
) -> None:
    """Write the exact-identifier set: 200 maintenance notes, 40 queries that are each one code, error number or
    function name; `gristmill eval OUT` scores it (Success@1: the note holding it first)."""
    from streams.devtools.identifier_set import write_identifier_set

    if out.exists() and any(out.iterdir()):
        raise fail("cannot write the set: ", f"{out} is not empty", status=2)
    documents, queries = write_identifier_set(out, seed)
    console.print(untrusted(f"{documents} documents, {queries} queries -> {out}"))
