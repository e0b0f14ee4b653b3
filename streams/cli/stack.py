"""`gristmill up`, `demo` and `status`: run the stack and see what it holds."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
from typing import Annotated, Any

import typer
from pydantic import SecretStr
from rich.text import Text

from streams.cli.context import (
    KeyRefused,
    console,
    fail,
    get_json,
    load_settings,
    print_hits,
    progress_bar,
    refused,
    running,
    styled,
    untrusted,
    with_stack,
)
from streams.settings import Settings


def check_http_exposure(settings: Settings) -> None:
    """Refuse (one line, exit status 2) to serve HTTP beyond loopback without API keys, unless
    GRISTMILL_HTTP_ALLOW_OPEN, and to start on a keys file that cannot be used."""
    from streams.web.api_keys import InvalidApiKeysFile, check_api_keys_file
    from streams.web.guards import loopback_host

    if settings.api_keys_file is not None:
        try:
            check_api_keys_file(settings.api_keys_file)
        except InvalidApiKeysFile as exc:
            raise fail("not starting: ", exc, status=2) from None
    elif not loopback_host(settings.http_host) and not settings.http_allow_open:
        raise fail("not starting: ", f"GRISTMILL_HTTP_HOST={settings.http_host or '(all)'} serves HTTP beyond "
                   "loopback, where anyone who reaches it reads the query log: set GRISTMILL_API_KEYS_FILE (or "
                   "GRISTMILL_HTTP_ALLOW_OPEN=true to serve it open)", status=2)
    elif not loopback_host(settings.http_host):
        console.print(styled(f"HTTP on {settings.http_host or '(all)'} without API keys", "yellow",
                             " (GRISTMILL_HTTP_ALLOW_OPEN): anyone who reaches it reads the query log"), soft_wrap=True)


def up(demo: Annotated[bool, typer.Option(help="Feed the bundled corpus and run a few searches.")] = False) -> None:
    """Start the stack: embedded broker (unless KAFKA_BOOTSTRAP_SERVERS), topics, worker, HTTP API."""
    settings = load_settings()
    check_http_exposure(settings)  # before anything starts

    from faust.worker import Worker as FaustWorker

    from streams.app import Worker
    from streams.broker import EmbeddedBroker, free_port
    from streams.topics import create_topics
    from streams.web.http import HttpService

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if (info := running(settings)) and info.get("pid") != os.getpid():  # own pid: PID 1 of a restarted container
        raise fail("gristmill is already running from ", settings.data_dir, " (see `gristmill status`)")
    broker = None
    if not settings.kafka_bootstrap_servers:
        broker = EmbeddedBroker(settings.broker_port, log_path=settings.data_dir / "broker.log").start()
        settings = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers})
    if settings.http_port == 0:
        settings = settings.model_copy(update={"http_port": free_port(settings.http_host)})
    worker = None
    try:
        created = create_topics(settings)
        console.print(f"topics ready ({len(created)} created, namespace {settings.namespace!r})")
        with console.status("loading model and index (first run exports the ONNX encoder)..."):
            worker = Worker(settings)
        agents = worker.load_agents()
        worker.app.add_dependency(HttpService(worker))
        encoder = worker.shared.serving.current.encoder
        http_url = f"http://{settings.http_host}:{settings.http_port}"
        settings.run_file.write_text(json.dumps({
            "pid": os.getpid(), "kafka": settings.kafka_bootstrap_servers, "embedded_broker": broker is not None,
            "http": http_url, "namespace": settings.namespace, "agents": agents,
            "model_version": encoder.version, "started_at": time.time(),
        }) + "\n", encoding="utf-8")
        console.print(Text.assemble(("gristmill up", "bold green"), "  broker ",
                                    (untrusted(settings.kafka_bootstrap_servers).plain, "cyan"),
                                    " (embedded Tansu)" if broker else "", "  HTTP ",
                                    (untrusted(http_url).plain, "cyan"),
                                    untrusted(f"  agents {', '.join(agents)}  model {encoder.version} on "
                                              f"{encoder.provider}")))
        console.print("Ctrl-C stops everything.")
        if demo:
            threading.Thread(target=_demo, args=(settings, http_url), daemon=True, name="demo").start()
        runner = FaustWorker(worker.app, loglevel=os.environ.get("GRISTMILL_LOG_LEVEL", "WARNING"), quiet=True,
                             redirect_stdouts=False)
        for name in ("streams", "agents"):
            logging.getLogger(name).setLevel(logging.INFO)
        with contextlib.suppress(SystemExit):  # the worker exits by raising SystemExit after a clean stop
            runner.execute_from_commandline()
    finally:
        if worker is not None:
            worker.close()
        if broker is not None:
            broker.stop()
        settings.run_file.unlink(missing_ok=True)
        console.print("gristmill stopped")


def _health(url: str, api_key: SecretStr | None, timeout: float = 10.0) -> dict[str, Any]:
    """The worker's full health report (`KeyRefused` when it answers only its status: a keys file is configured
    and GRISTMILL_API_KEY is not a key with the read role)."""
    health: dict[str, Any] = get_json(f"{url}/health", timeout=timeout, api_key=api_key)
    if "index" not in health:
        raise KeyRefused(403, f"{url}/health", "the worker shows its model and index to a key with the read role "
                                               "only", api_key is not None)
    return health


def _wait_indexed(url: str, documents: int, timeout_s: float, api_key: SecretStr | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            health = _health(url, api_key)
            if health["index"]["documents"] >= documents:
                return health
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"index holds {health.get('index')} after {timeout_s}s, expected {documents} documents")


def _demo(settings: Settings, url: str) -> None:
    from streams.devtools.demo import CORPUS, QUERIES
    from streams.produce import DocumentSource, produce
    from streams.topics import TopicNames

    try:
        _wait_indexed(url, 0, 120, settings.api_key)
        source = DocumentSource(CORPUS)
        count = source.count
        with progress_bar() as progress:
            task = progress.add_task("demo corpus -> documents", total=count)
            produce(settings, TopicNames(settings.namespace).documents, source.records(),
                    lambda n: progress.advance(task, n)).check()
        with console.status(f"indexing {count} documents..."):
            health = _wait_indexed(url, count, 600, settings.api_key)
        console.print(untrusted(f"indexed {health['index']['documents']} documents as {health['index']['chunks']} "
                                "chunks"))
        for query in QUERIES[:4]:
            print_hits(get_json(f"{url}/search?" + urllib.parse.urlencode({"q": query, "k": 3}),
                                api_key=settings.api_key))
        console.print(f"Try: gristmill search 'your question'   or   curl '{url}/search?q=open+a+file&k=3'")
    except Exception as exc:  # the demo must never take the worker down
        console.print(styled("demo failed: ", "red", exc), soft_wrap=True)


def demo() -> None:
    """Feed the bundled corpus to the running stack and show a few searches."""
    settings, url = with_stack(load_settings())
    if not settings.kafka_bootstrap_servers:
        raise fail("no running stack: ", "start it with `gristmill up` or set KAFKA_BOOTSTRAP_SERVERS")
    _demo(settings, url)


def trainer_line(trainer: dict[str, Any]) -> str:
    """One line of the trainer's state: waiting for what, or its phase with done of total and an ETA."""
    last = trainer.get("last") or {}
    line = f"trainer {trainer['state']}"
    if trainer.get("waiting_for"):
        line += f" for {trainer['waiting_for']}"
    if trainer.get("pid"):
        line += f" (attempt {trainer['attempt']}, pid {trainer['pid']})"
    progress = trainer.get("progress") or {}
    if progress.get("step"):
        eta = f", ETA {progress['eta_s']:.0f}s" if progress.get("eta_s") is not None else ""
        line += (f": {progress['phase']} (phase {progress['step']}/{progress['steps']}) {progress['done']}/"
                 f"{progress['total']} {progress['unit']}{eta}")
    if last:
        line += f"; last: {last.get('version')} {last.get('status')} {last.get('reason') or ''}"
    return line


def watch_progress(url: str, interval_s: float = 1.0, api_key: SecretStr | None = None) -> None:
    """Progress bars of the rollout and the training run, refreshed from `/health` until Ctrl-C."""
    with progress_bar() as bars:
        rollout_task = bars.add_task("rollout", total=None, visible=False)
        build_task = bars.add_task("challenger", total=None, visible=False)
        trainer_task = bars.add_task("trainer", total=None, visible=False)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                try:
                    health = _health(url, api_key, timeout=5)
                except KeyRefused as exc:
                    raise refused(exc) from None
                except (urllib.error.URLError, OSError) as exc:
                    raise fail("the stack stopped answering: ", exc) from exc
                for task, kind in ((rollout_task, "rollout"), (build_task, "challenger_build")):
                    if copy := health.get(kind):  # a rollout, or an experiment's collection being built
                        bars.update(task, visible=True, total=max(1, copy["documents"]), completed=copy["copied"],
                                    description=untrusted(f"{kind.replace('_', ' ')} {copy['previous']} -> "
                                                          f"{copy['version']} ({copy['state']})").plain)
                trainer = health.get("trainer") or {}
                progress = trainer.get("progress") or {}
                if progress.get("step"):
                    bars.update(trainer_task, visible=True, total=max(1, progress["total"]),
                                completed=progress["done"],
                                description=untrusted(f"trainer {progress['phase']} ({progress['step']}/"
                                                      f"{progress['steps']}, {progress['unit'] or 'step'})").plain)
                else:
                    bars.update(trainer_task, visible=bool(trainer), total=1, completed=0,
                                description=untrusted(trainer_line(trainer)).plain if trainer else "trainer")
                time.sleep(interval_s)


def status(watch: Annotated[bool, typer.Option("--watch", help="Then follow the rollout and the training run "
                                                                 "with progress bars until Ctrl-C.")] = False
           ) -> None:
    """Where the running stack is (broker, HTTP) and what it holds."""
    settings = load_settings()
    info = running(settings)
    if info is None:
        console.print(untrusted(f"gristmill is not running from {settings.data_dir.resolve()}"))
        raise typer.Exit(1)
    console.print(untrusted(f"broker  {info['kafka']}{' (embedded Tansu)' if info.get('embedded_broker') else ''}"))
    console.print(untrusted(f"HTTP    {info['http']}"))
    console.print(untrusted(f"agents  {', '.join(info.get('agents', []))}   pid {info['pid']}"))
    try:
        health = _health(info["http"], settings.api_key, timeout=5)
        console.print(untrusted(f"model   {health['model_version']} on {health['encoder_provider']}"))
        console.print(untrusted(f"index   {health['index']['documents']} documents, {health['index']['chunks']} "
                                f"chunks (index version {health.get('index_version')})"))
        if health.get("rollout"):
            r = health["rollout"]
            console.print(untrusted(f"rollout {r['previous']} -> {r['version']}: {r['state']}, {r['copied']}/"
                                    f"{r['documents']} documents ({r['progress']:.0%}), {r['embedded']} re-embedded"
                                    + (f", error: {r['error']}" if r.get("error") else "")), soft_wrap=True)
        if health.get("trainer"):
            console.print(untrusted(trainer_line(health["trainer"])), soft_wrap=True)
    except KeyRefused as exc:
        raise refused(exc) from None
    except (urllib.error.URLError, OSError) as exc:
        console.print(styled("HTTP API not answering yet: ", "yellow", exc), soft_wrap=True)
        return
    if watch:
        watch_progress(info["http"], api_key=settings.api_key)
