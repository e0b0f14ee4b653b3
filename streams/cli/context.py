"""What every command needs: settings, the running stack's addresses, the console, and how hits are shown."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from typing import Any

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from schemas.errors import GristmillError
from streams.settings import Settings

#: C0 and C1 control characters but newline (tabs too: a table cannot measure them), Unicode's line and paragraph
#: separators, and the bidi overrides and isolates that reorder a line.
CONTROL_CHARACTERS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

console = Console(markup=False, highlight=False, emoji=False)  # nothing printed is ever read as markup


def untrusted(value: object) -> Text:
    """Text that comes from outside the CLI's own code (a record's ids and texts, a worker's answer, a file, an
    exception's message): shown as it is, never read as markup, its control characters (a terminal escape sequence
    in a doc_id) shown escaped. Every table cell, title and message part from outside goes through here."""
    return Text(CONTROL_CHARACTERS.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"),
                                       str(value)))


def styled(label: str, style: str, *rest: object) -> Text:
    """`label` in `style`, then `rest` as untrusted text: one line of the CLI's own words and what came from outside."""
    return Text.assemble((label, style), *(untrusted(part) for part in rest))


def fail(label: str, *rest: object, status: int = 1) -> typer.Exit:
    """Print one red line (`label`, then `rest` as untrusted text); the exit to raise."""
    console.print(styled(label, "red", *rest), soft_wrap=True)
    return typer.Exit(status)


class KeyRefused(GristmillError):
    """The worker's HTTP API refused the CLI's request for its key (401: none sent or not recognized; 403: the key
    lacks the role, or the request's Host/Origin is not served)."""

    def __init__(self, status: int, url: str, answer: str, key_sent: bool) -> None:
        where = url.split("?")[0]
        if status == 401 and not key_sent:
            message = f"{where} needs an API key: set GRISTMILL_API_KEY ({answer})"
        elif status == 401:
            message = f"{where} did not accept GRISTMILL_API_KEY ({answer})"
        elif key_sent:
            message = f"{where} refused the request (403): {answer} (the key is GRISTMILL_API_KEY's)"
        else:
            message = f"{where} refused the request (403): {answer} (no GRISTMILL_API_KEY was sent)"
        super().__init__(message)
        self.status = status

    @classmethod
    def from_http_error(cls, error: urllib.error.HTTPError, url: str, key_sent: bool) -> KeyRefused:
        return cls(error.code, url, _answer(error), key_sent)


def load_settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:
        raise fail("invalid settings: ", exc, status=2) from exc


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


def get_json(url: str, timeout: float = 10.0, api_key: SecretStr | None = None) -> Any:
    """GET a JSON answer, with `api_key` as the bearer token when given; `KeyRefused` on a 401 or 403."""
    headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise KeyRefused.from_http_error(exc, url, api_key is not None) from None
        raise


def _answer(error: urllib.error.HTTPError) -> str:
    """The worker's one-line reason (its JSON `error`), or the start of its body."""
    body = error.read().decode(errors="replace")
    try:
        return str(json.loads(body)["error"])[:300]
    except (ValueError, KeyError, TypeError):
        return body[:300] or str(error.reason)


def refused(exc: KeyRefused) -> typer.Exit:
    """Print the refusal as one line; the exit (status 1) to raise."""
    return fail("refused: ", exc)


def stack_json(url: str, what: str, timeout: float = 30.0, api_key: SecretStr | None = None) -> Any:
    """GET a JSON answer from the running stack; a refusal or a stack that is not answering is one line and
    exit status 1."""
    try:
        return get_json(url, timeout=timeout, api_key=api_key)
    except KeyRefused as exc:
        raise refused(exc) from None
    except urllib.error.HTTPError as exc:
        raise fail(f"{what} failed ({exc.code}): ", _answer(exc)) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise fail("no HTTP API at ", url.split("?")[0], f": {exc} (is `gristmill up` running?)") from exc


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=console)


def print_hits(result: dict[str, Any]) -> None:
    cached = ", cached" if result.get("cached") else ""
    table = Table(title=untrusted(f"{result['query']!r}  ({result['latency_ms']:.1f} ms, model "
                                  f"{result['model_version']}, {result.get('mode', 'dense')}"
                                  f"{', by document' if result.get('group') == 'doc' else ''}{cached})"))
    for column in ("score", "doc_id", "chunk", "text"):
        table.add_column(column, overflow="fold" if column == "text" else "ellipsis")
    for hit in result["hits"]:
        text = " ".join(hit["text"].split())
        table.add_row(f"{hit['score']:.3f}", untrusted(hit["doc_id"]), str(hit["chunk"]), untrusted(text[:160]))
    console.print(table)


def require_kafka(settings: Settings) -> Settings:
    settings, _ = with_stack(settings)
    if not settings.kafka_bootstrap_servers:
        raise fail("no Kafka: ", "start `gristmill up` or set KAFKA_BOOTSTRAP_SERVERS")
    return settings
