"""`gristmill` command line: run the stack, produce documents, search, status, benchmarks."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from schemas import ModelUpdate
from streams.settings import Settings

app = typer.Typer(help="gristmill: a streaming pipeline that keeps a semantic-search index fresh.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
produce_app = typer.Typer(help="Produce events to gristmill's topics.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks, each against a baseline measured in the same run.", no_args_is_help=True)
deadletter_app = typer.Typer(help="Inspect dead letters and replay fixed records.", no_args_is_help=True)
app.add_typer(produce_app, name="produce")
app.add_typer(bench_app, name="bench")
app.add_typer(deadletter_app, name="deadletter")
console = Console()


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def _running(settings: Settings) -> dict[str, Any] | None:
    """What `gristmill up` wrote about the running stack, if it is still alive."""
    try:
        info = json.loads(settings.run_file.read_text(encoding="utf-8"))
        os.kill(int(info["pid"]), 0)
        return info
    except (OSError, ValueError, KeyError):
        return None


def _with_stack(settings: Settings) -> tuple[Settings, str]:
    """Settings pointed at the running stack's broker, and its HTTP URL."""
    info = _running(settings) or {}
    bootstrap = settings.kafka_bootstrap_servers or info.get("kafka")
    url = info.get("http") or f"http://{settings.http_host}:{settings.http_port}"
    return settings.model_copy(update={"kafka_bootstrap_servers": bootstrap}), url


def _get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


@app.command()
def up(demo: Annotated[bool, typer.Option(help="Feed the bundled corpus and run a few searches.")] = False) -> None:
    """Start the stack: embedded broker (unless KAFKA_BOOTSTRAP_SERVERS), topics, worker, HTTP API."""
    from faust.worker import Worker

    from streams.app import Pipeline
    from streams.broker import EmbeddedBroker, free_port
    from streams.http import HttpService
    from streams.topics import create_topics

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if _running(settings):
        console.print(f"[red]gristmill is already running from {settings.data_dir}[/red] (see `gristmill status`)")
        raise typer.Exit(1)
    broker = None
    if not settings.kafka_bootstrap_servers:
        broker = EmbeddedBroker(settings.broker_port, log_path=settings.data_dir / "broker.log").start()
        settings = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers})
    if settings.http_port == 0:
        settings = settings.model_copy(update={"http_port": free_port(settings.http_host)})
    pipeline = None
    try:
        created = create_topics(settings)
        console.print(f"topics ready ({len(created)} created, namespace {settings.namespace!r})")
        with console.status("loading model and index (first run exports the ONNX encoder)..."):
            pipeline = Pipeline(settings)
        agents = pipeline.load_agents()
        pipeline.app.add_dependency(HttpService(pipeline))
        http_url = f"http://{settings.http_host}:{settings.http_port}"
        settings.run_file.write_text(json.dumps({
            "pid": os.getpid(), "kafka": settings.kafka_bootstrap_servers, "embedded_broker": broker is not None,
            "http": http_url, "namespace": settings.namespace, "agents": agents,
            "model_version": pipeline.encoder.version, "started_at": time.time(),
        }) + "\n", encoding="utf-8")
        console.print(f"[bold green]gristmill up[/bold green]  broker [cyan]{settings.kafka_bootstrap_servers}"
                      f"[/cyan]{' (embedded Tansu)' if broker else ''}  HTTP [cyan]{http_url}[/cyan]  "
                      f"agents {', '.join(agents)}  model {pipeline.encoder.version} on {pipeline.encoder.provider}")
        console.print("Ctrl-C stops everything.")
        if demo:
            threading.Thread(target=_demo, args=(settings, http_url), daemon=True, name="demo").start()
        worker = Worker(pipeline.app, loglevel=os.environ.get("GRISTMILL_LOG_LEVEL", "WARNING"), quiet=True,
                        redirect_stdouts=False)
        for name in ("streams", "agents"):
            logging.getLogger(name).setLevel(logging.INFO)
        with contextlib.suppress(SystemExit):  # the worker exits by raising SystemExit after a clean stop
            worker.execute_from_commandline()
    finally:
        if pipeline is not None:
            pipeline.close()
        if broker is not None:
            broker.stop()
        settings.run_file.unlink(missing_ok=True)
        console.print("gristmill stopped")


def _wait_indexed(url: str, documents: int, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            health = _get_json(f"{url}/health")
            if health["index"]["documents"] >= documents:
                return health
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"index holds {health.get('index')} after {timeout_s}s, expected {documents} documents")


def _demo(settings: Settings, url: str) -> None:
    from streams.demo import CORPUS, QUERIES
    from streams.produce import produce, read_documents
    from streams.topics import TopicNames

    try:
        _wait_indexed(url, 0, 120)
        count, records = read_documents(CORPUS)
        with _progress() as progress:
            task = progress.add_task("demo corpus -> documents", total=count)
            produce(settings, TopicNames(settings.namespace).documents, records,
                    lambda n: progress.advance(task, n))
        with console.status(f"indexing {count} documents..."):
            health = _wait_indexed(url, count, 600)
        console.print(f"indexed {health['index']['documents']} documents as {health['index']['chunks']} chunks")
        for query in QUERIES[:4]:
            _print_hits(_get_json(f"{url}/search?" + urllib.parse.urlencode({"q": query, "k": 3})))
        console.print(f"Try: gristmill search 'your question'   or   curl '{url}/search?q=open+a+file&k=3'")
    except Exception as exc:  # the demo must never take the worker down
        console.print(f"[red]demo failed:[/red] {exc}")


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console)


def _print_hits(result: dict[str, Any]) -> None:
    cached = ", cached" if result.get("cached") else ""
    table = Table(title=f"{result['query']!r}  ({result['latency_ms']:.1f} ms, model {result['model_version']}"
                        f"{cached})")
    for column in ("score", "doc_id", "chunk", "text"):
        table.add_column(column, overflow="fold" if column == "text" else "ellipsis")
    for hit in result["hits"]:
        text = " ".join(hit["text"].split())
        table.add_row(f"{hit['score']:.3f}", hit["doc_id"], str(hit["chunk"]), text[:160])
    console.print(table)


@app.command()
def demo() -> None:
    """Feed the bundled corpus to the running stack and show a few searches."""
    settings, url = _with_stack(_settings())
    if not settings.kafka_bootstrap_servers:
        console.print("[red]no running stack:[/red] start it with `gristmill up` or set KAFKA_BOOTSTRAP_SERVERS")
        raise typer.Exit(1)
    _demo(settings, url)


@app.command()
def status() -> None:
    """Where the running stack is (broker, HTTP) and what it holds."""
    settings = _settings()
    info = _running(settings)
    if info is None:
        console.print(f"gristmill is not running from {settings.data_dir.resolve()}")
        raise typer.Exit(1)
    console.print(f"broker  {info['kafka']}{' (embedded Tansu)' if info.get('embedded_broker') else ''}")
    console.print(f"HTTP    {info['http']}")
    console.print(f"agents  {', '.join(info.get('agents', []))}   pid {info['pid']}")
    try:
        health = _get_json(f"{info['http']}/health", timeout=5)
        console.print(f"model   {health['model_version']} on {health['encoder_provider']}")
        console.print(f"index   {health['index']['documents']} documents, {health['index']['chunks']} chunks "
                      f"(index version {health.get('index_version')})")
        if health.get("rollout"):
            r = health["rollout"]
            console.print(f"rollout {r['previous']} -> {r['version']}: {r['state']}, {r['copied']}/{r['documents']} "
                          f"documents ({r['progress']:.0%}), {r['embedded']} re-embedded"
                          + (f", error: {r['error']}" if r.get("error") else ""))
        if health.get("trainer"):
            t = health["trainer"]
            last = t.get("last") or {}
            console.print(f"trainer {t['state']}" + (f" (attempt {t['attempt']}, pid {t['pid']})" if t["pid"] else "")
                          + (f"; last: {last.get('version')} {last.get('status')} {last.get('reason') or ''}"
                             if last else ""))
    except (urllib.error.URLError, OSError) as exc:
        console.print(f"[yellow]HTTP API not answering yet:[/yellow] {exc}")


@app.command()
def search(text: str, k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 5,
           source: Annotated[str | None, typer.Option(help="Only chunks from this source.")] = None) -> None:
    """Search the running index over HTTP and print the hits."""
    _, url = _with_stack(_settings())
    params = {"q": text, "k": k, **({"source": source} if source else {})}
    try:
        _print_hits(_get_json(f"{url}/search?" + urllib.parse.urlencode(params)))
    except urllib.error.HTTPError as exc:
        console.print(f"[red]search failed ({exc.code}):[/red] {exc.read().decode(errors='replace')}")
        raise typer.Exit(1) from exc
    except (urllib.error.URLError, OSError) as exc:
        console.print(f"[red]no HTTP API at {url}:[/red] {exc} (is `gristmill up` running?)")
        raise typer.Exit(1) from exc


@app.command()
def ask(text: str, k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 5,
        source: Annotated[str | None, typer.Option(help="Only chunks from this source.")] = None,
        timeout: Annotated[float, typer.Option(help="Seconds to wait for the response.")] = 30.0) -> None:
    """Send a query through the `queries` topic and wait for its response on `responses`."""
    from streams.roundtrip import QueryRoundTrip

    settings = _require_kafka(_settings())
    with QueryRoundTrip(settings) as roundtrip:
        query_id = roundtrip.send(text, k, {"source": source} if source else None)
        try:
            answer = roundtrip.wait([query_id], timeout)[query_id]
        except TimeoutError as exc:
            console.print(f"[red]no response in {timeout}s[/red] (is a worker with the query agent running?)")
            raise typer.Exit(1) from exc
    response = answer.response
    _print_hits({**response, "query": text})
    console.print(f"query_id {query_id}  round trip {answer.round_trip_s * 1000:.1f} ms  "
                  f"index {response['index_version']}  cached {response['cached']}")


@app.command("eval")
def evaluate(
    beir_dir: Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv.")],
    reference: Annotated[bool, typer.Option(help="Also score sentence-transformers exact search.")] = False,
    split: Annotated[str, typer.Option(help="qrels split to use.")] = "test",
    top_k: Annotated[int, typer.Option(help="Chunks requested per query.")] = 200,
) -> None:
    """Ingest a BEIR corpus through Kafka, query it through Kafka, and print retrieval metrics."""
    from streams.evaluation import ingest_corpus, load_beir, percentile, query_pipeline, reference_scores
    from streams.state.registry import LocalModelRegistry

    settings = _require_kafka(_settings())
    _, url = _with_stack(settings)
    try:
        dataset = load_beir(beir_dir, split)
    except (OSError, ValueError, KeyError) as exc:
        console.print(f"[red]cannot read {beir_dir}:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"{len(dataset.corpus)} documents, {len(dataset.queries)} judged queries")
    with _progress() as progress:
        task = progress.add_task("corpus -> documents", total=len(dataset.corpus))
        took = ingest_corpus(settings, url, dataset, on_sent=lambda n: progress.advance(task, n))
    console.print(f"indexed in {took:.1f}s; querying through Kafka...")
    run = query_pipeline(settings, dataset, top_k=top_k)
    table = Table(title=f"gristmill eval {beir_dir.name}")
    table.add_column("metric")
    table.add_column("pipeline", justify="right")
    ref = None
    if reference:
        model = LocalModelRegistry(settings.models_dir, settings.model_name).current()
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


@app.command()
def retrain(reason: Annotated[str, typer.Option(help="Recorded reason.")] = "manual") -> None:
    """Ask the trainer for a new model version now (a `retrain` event, reason manual)."""
    from datetime import UTC, datetime

    from schemas import RetrainRequest
    from streams.produce import Outgoing, produce
    from streams.topics import TopicNames

    settings = _require_kafka(_settings())
    try:
        request = RetrainRequest(reason=reason, pairs=0, requested_at=datetime.now(UTC))  # type: ignore[arg-type]
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    produce(settings, TopicNames(settings.namespace)["retrain"],
            iter([Outgoing(settings.model_name.encode(), request.model_dump_json().encode())]))
    console.print(f"retrain requested ({reason}) for model {settings.model_name}")


def _send_model_update(settings: Settings, update: ModelUpdate) -> None:
    from streams.produce import Outgoing, produce
    from streams.topics import TopicNames

    produce(settings, TopicNames(settings.namespace)["model-updates"],
            iter([Outgoing(settings.model_name.encode(), update.model_dump_json().encode())]))


@app.command()
def rollback() -> None:
    """Serve the model (and its collection) that served before the current one, in one step."""
    from streams.state.registry import LocalModelRegistry
    from streams.trainer import rollback_update

    settings = _require_kafka(_settings())
    try:
        update = rollback_update(LocalModelRegistry(settings.models_dir, settings.model_name))
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    _send_model_update(settings, update)
    console.print(f"rollback requested: {update.previous_version} -> {update.version} "
                  "(`gristmill status` shows the switch)")


@app.command()
def promote(version: str) -> None:
    """Roll out a registered version (e.g. a rejected candidate) regardless of its evaluation."""
    from streams.state.registry import LocalModelRegistry
    from streams.trainer import promote_update

    settings = _require_kafka(_settings())
    try:
        update = promote_update(LocalModelRegistry(settings.models_dir, settings.model_name), version,
                                "promoted by an operator")
    except KeyError as exc:
        console.print(f"[red]{exc.args[0]}[/red]")
        raise typer.Exit(1) from exc
    _send_model_update(settings, update)
    console.print(f"promotion of {version} requested")


@app.command()
def models() -> None:
    """Registered model versions with their evaluation and lineage."""
    from streams.state.registry import LocalModelRegistry

    settings = _settings()
    registry = LocalModelRegistry(settings.models_dir, settings.model_name)
    current = registry.current()
    table = Table("version", "serving", "created", "base", "pairs", "nDCG@10 serving -> candidate", "MRR@10")
    for model in registry.versions():
        m = model.metrics
        ndcg = (f"{m['current_nDCG@10']:.4f} -> {m['candidate_nDCG@10']:.4f}" if "candidate_nDCG@10" in m else "")
        mrr = f"{m['current_MRR@10']:.4f} -> {m['candidate_MRR@10']:.4f}" if "candidate_MRR@10" in m else ""
        table.add_row(model.version, "*" if current and current.version == model.version else "",
                      model.created_at[:19], str(model.lineage.get("base_version", model.lineage.get("base", ""))),
                      str(model.lineage.get("pairs", "")), ndcg, mrr)
    console.print(table)


def _require_kafka(settings: Settings) -> Settings:
    settings, _ = _with_stack(settings)
    if not settings.kafka_bootstrap_servers:
        console.print("[red]no Kafka:[/red] start `gristmill up` or set KAFKA_BOOTSTRAP_SERVERS")
        raise typer.Exit(1)
    return settings


@produce_app.command("feedback")
def produce_feedback(
    query_id: Annotated[str, typer.Argument(help="The query judged (as answered on `responses`).")],
    doc_id: Annotated[str, typer.Argument(help="The document judged.")],
    label: Annotated[int | None, typer.Option(help="1 relevant, 0 neutral, -1 not relevant.")] = None,
    rating: Annotated[int | None, typer.Option(help="1..5 (4-5 positive, 1-2 negative).")] = None,
) -> None:
    """Judge one answer: a `feedback` record (exactly one of --label or --rating)."""
    from pydantic import ValidationError

    from schemas import FeedbackEvent
    from streams.produce import Outgoing, produce
    from streams.topics import TopicNames

    settings = _require_kafka(_settings())
    try:
        event = FeedbackEvent(query_id=query_id, doc_id=doc_id, label=label, rating=rating)
    except ValidationError as exc:
        console.print(f"[red]invalid feedback:[/red] {exc.errors(include_url=False)[0]['msg']}")
        raise typer.Exit(2) from exc
    produce(settings, TopicNames(settings.namespace)["feedback"],
            iter([Outgoing(query_id.encode(), event.model_dump_json(exclude_none=True).encode())]))
    console.print(f"feedback on {query_id} -> {doc_id} sent")


@produce_app.command("documents")
def produce_documents(
    path: Annotated[Path, typer.Argument(help="JSONL of document events, BEIR corpus.jsonl, or a folder.")],
    version: Annotated[int | None, typer.Option(help="Version for records without one (default: now, ms).")] = None,
) -> None:
    """Produce documents to the `documents` topic, with a progress bar."""
    from streams.produce import produce, read_documents
    from streams.topics import TopicNames

    settings = _require_kafka(_settings())
    try:
        count, records = read_documents(path, version)
    except (OSError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    topic = TopicNames(settings.namespace).documents
    with _progress() as progress:
        task = progress.add_task(f"{path.name} -> {topic}", total=count)
        sent = produce(settings, topic, records, lambda n: progress.advance(task, n))
    console.print(f"produced {sent} records to {topic} at {settings.kafka_bootstrap_servers}")


@deadletter_app.command("inspect")
def deadletter_inspect(
    limit: Annotated[int | None, typer.Option(help="At most this many, oldest first.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write them as JSONL here, to fix and replay.")] = None,
) -> None:
    """List dead letters with their reasons (read from the start of the dead-letter topic)."""
    from streams.deadletters import read_dead_letters, write_jsonl

    settings = _require_kafka(_settings())
    letters = list(read_dead_letters(settings, limit=limit))
    table = Table(title=f"{len(letters)} dead letters")
    for column in ("topic", "partition@offset", "key", "reasons", "value as received"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        value = (letter.value or "")[:120] + (" (base64)" if letter.value_encoding == "base64" else "")
        table.add_row(letter.topic, f"{letter.partition}@{letter.offset}", letter.key or "",
                      "\n".join(f"{e.loc}: {e.msg}" for e in letter.errors), value)
    console.print(table)
    if out is not None:
        write_jsonl(letters, out)
        console.print(f"wrote {len(letters)} dead letters to {out}: fix their `value` and run "
                      f"`gristmill deadletter replay {out}`")


@deadletter_app.command("replay")
def deadletter_replay(
    path: Annotated[Path, typer.Argument(help="Dead letters as JSONL (from `inspect --out`), values fixed.")],
    dry_run: Annotated[bool, typer.Option(help="Only check them.")] = False,
) -> None:
    """Re-check fixed dead letters and produce the valid ones to the topics they came from."""
    from streams.deadletters import plan_replay, replay

    settings = _require_kafka(_settings())
    try:
        plan = plan_replay(path, settings)
    except OSError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    for number, reasons in plan.still_bad:
        console.print(f"[yellow]line {number} still invalid, not replayed:[/yellow] {reasons}")
    sent = 0 if dry_run else replay(plan, settings)
    console.print(f"{len(plan.ready)} valid, {len(plan.still_bad)} still invalid; replayed {sent}")
    if plan.still_bad:
        raise typer.Exit(4)


@bench_app.command("ingest")
def bench_ingest(
    docs: Annotated[int, typer.Option(help="Documents in the pipeline runs.")] = 200,
) -> None:
    """ONNX encoder vs sentence-transformers, and the end-to-end pipeline, on the same texts."""
    from streams.bench import run_ingest_bench

    run_ingest_bench(_settings(), docs, console)


@bench_app.command("query")
def bench_query(
    chunks: Annotated[int, typer.Option(help="Chunks in the benchmark index.")] = 10_000,
) -> None:
    """Query latency (HTTP, Kafka round trip) and sustained QPS against a per-query baseline."""
    from streams.bench_query import run_query_bench

    run_query_bench(_settings(), chunks, console)


@bench_app.command("monitor")
def bench_monitor(
    sizes: Annotated[list[int] | None, typer.Option("--size", help="Window sizes (repeatable).")] = None,
) -> None:
    """Great Expectations cost and monitor lag per window."""
    from streams.bench_monitor import run_monitor_bench

    run_monitor_bench(_settings(), sizes or [1_000, 10_000], console)


@bench_app.command("flywheel")
def bench_flywheel(
    pairs: Annotated[int, typer.Option(help="Positive feedback pairs in the retrain.")] = 2_000,
    chunks: Annotated[int, typer.Option(help="Chunks in the index that is rolled out.")] = 10_000,
) -> None:
    """Wall time of one retrain and of one rollout, next to the serving model and to first-time indexing."""
    from streams.bench_flywheel import run_flywheel_bench

    run_flywheel_bench(_settings(), pairs, chunks, console)


@bench_app.command("badinput")
def bench_badinput(
    records: Annotated[int, typer.Option(help="Document records per run.")] = 100_000,
    bad_share: Annotated[float, typer.Option(help="Share of bad records (30 kinds) in the second run.")] = 0.1,
) -> None:
    """Throughput with bad records mixed in vs a clean run of the same size; nothing lost either way."""
    from streams.bench_reliability import run_badinput_bench

    run_badinput_bench(_settings(), records, bad_share, console)


@bench_app.command("soak")
def bench_soak(minutes: Annotated[float, typer.Option(help="Soak duration.")] = 10.0) -> None:
    """Half the maximum ingest rate plus HTTP searches: RSS growth, consumer lag, error logs."""
    from streams.bench_reliability import run_soak_bench

    run_soak_bench(_settings(), minutes, console)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()
