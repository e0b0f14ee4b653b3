"""What every command needs: settings, the running stack's addresses, the console, and how hits are shown."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from streams.settings import Settings

console = Console()


def load_settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def running(settings: Settings) -> dict[str, Any] | None:
    """What `gristmill up` wrote about the running stack, if it is still alive."""
    try:
        info = json.loads(settings.run_file.read_text(encoding="utf-8"))
        os.kill(int(info["pid"]), 0)
        return info
    except (OSError, ValueError, KeyError):
        return None


def with_stack(settings: Settings) -> tuple[Settings, str]:
    """Settings pointed at the running stack's broker, and its HTTP URL."""
    info = running(settings) or {}
    bootstrap = settings.kafka_bootstrap_servers or info.get("kafka")
    url = info.get("http") or f"http://{settings.http_host}:{settings.http_port}"
    return settings.model_copy(update={"kafka_bootstrap_servers": bootstrap}), url


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def stack_json(url: str, what: str, timeout: float = 30.0) -> Any:
    """GET a JSON answer from the running stack; a refusal or a stack that is not answering is one line and
    exit status 1."""
    try:
        return get_json(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        console.print(f"[red]{what} failed ({exc.code}):[/red] {exc.read().decode(errors='replace')[:300]}")
        raise typer.Exit(1) from exc
    except (urllib.error.URLError, OSError) as exc:
        console.print(f"[red]no HTTP API at {url.split('?')[0]}:[/red] {exc} (is `gristmill up` running?)")
        raise typer.Exit(1) from exc


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console)


def print_hits(result: dict[str, Any]) -> None:
    cached = ", cached" if result.get("cached") else ""
    table = Table(title=f"{result['query']!r}  ({result['latency_ms']:.1f} ms, model {result['model_version']}, "
                        f"{result.get('mode', 'dense')}{', by document' if result.get('group') == 'doc' else ''}"
                        f"{cached})")
    for column in ("score", "doc_id", "chunk", "text"):
        table.add_column(column, overflow="fold" if column == "text" else "ellipsis")
    for hit in result["hits"]:
        text = " ".join(hit["text"].split())
        table.add_row(f"{hit['score']:.3f}", hit["doc_id"], str(hit["chunk"]), text[:160])
    console.print(table)


def require_kafka(settings: Settings) -> Settings:
    settings, _ = with_stack(settings)
    if not settings.kafka_bootstrap_servers:
        console.print("[red]no Kafka:[/red] start `gristmill up` or set KAFKA_BOOTSTRAP_SERVERS")
        raise typer.Exit(1)
    return settings
