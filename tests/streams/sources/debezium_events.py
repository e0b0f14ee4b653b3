"""Debezium 2.x change events as the documentation shows them (JSON converter), for PostgreSQL and MySQL.

Shapes follow https://debezium.io/documentation/reference/2.7/connectors/postgresql.html#postgresql-events
(`source.lsn`, `txId`; with REPLICA IDENTITY DEFAULT a delete's `before` holds only the primary key) and
https://debezium.io/documentation/reference/2.7/connectors/mysql.html#mysql-events (`source.file`, `pos`, `row`;
`before` holds the whole row). With `schemas.enable=true` each key and value is wrapped as {"schema", "payload"}.
"""

from __future__ import annotations

import json
from typing import Any

PG_SOURCE = {"version": "2.7.3.Final", "connector": "postgresql", "name": "dbserver1", "snapshot": "false",
             "db": "postgres", "sequence": "[\"24023119\",\"24023128\"]", "schema": "public", "table": "articles",
             "txId": 555, "xmin": None}
MYSQL_SOURCE = {"version": "2.7.3.Final", "connector": "mysql", "name": "mysql-server-1", "snapshot": "false",
                "db": "inventory", "table": "articles", "server_id": 223344, "gtid": None, "thread": 7, "query": None}
KEY_SCHEMA = {"type": "struct", "name": "dbserver1.public.articles.Key", "optional": False,
              "fields": [{"field": "id", "type": "int32", "optional": False}]}
VALUE_SCHEMA = {"type": "struct", "name": "dbserver1.public.articles.Envelope", "optional": False, "fields": [
    {"type": "struct", "field": "before", "optional": True, "fields": []},
    {"type": "struct", "field": "after", "optional": True, "fields": []},
    {"type": "struct", "field": "source", "optional": False, "fields": []},
    {"type": "string", "field": "op", "optional": False},
    {"type": "int64", "field": "ts_ms", "optional": True}]}


def row(article_id: int, title: str, body: str, **more: Any) -> dict[str, Any]:
    return {"id": article_id, "title": title, "body": body, "author": "ann", "year": 2024, "status": "published",
            **more}


def pg_event(op: str, lsn: int, before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
             ts_ms: int = 1_700_000_000_000) -> dict[str, Any]:
    event: dict[str, Any] = {"source": {**PG_SOURCE, "ts_ms": ts_ms, "lsn": lsn}, "op": op, "ts_ms": ts_ms + 5,
                             "transaction": None}
    if op != "t":
        event |= {"before": before, "after": after}
    return event


def mysql_event(op: str, file: str, pos: int, before: dict[str, Any] | None = None,
                after: dict[str, Any] | None = None, row_in_event: int = 0) -> dict[str, Any]:
    return {"before": before, "after": after, "op": op, "ts_ms": 1_465_581_029_523, "transaction": None,
            "source": {**MYSQL_SOURCE, "ts_ms": 1_465_581_029_100, "file": file, "pos": pos, "row": row_in_event}}


def enveloped(payload: Any, schema: dict[str, Any]) -> dict[str, Any]:
    return {"schema": schema, "payload": payload}


def encode(value: Any) -> bytes | None:
    return None if value is None else json.dumps(value).encode()


def articles_sources(topic: str) -> str:
    """A sources file mapping a Debezium PostgreSQL `articles` table on `topic`: published rows are documents."""
    return f"""
sources:
  - name: articles
    topic: {topic}
    format: debezium-json
    doc_id: "article-{{id}}"
    title: "{{title}}"
    text: "{{body}}"
    metadata: {{author: "{{author}}", year: "{{year}}"}}
    version: source.lsn
    where: {{status: published}}
"""
