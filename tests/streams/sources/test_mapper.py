"""A source's records -> document events, or dead letters that name the source and the reason."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import DocumentEvent
from streams.sources.mapper import SourceContract
from streams.sources.mapping import parse_sources
from streams.validation import Accepted, RawMessage, Rejected
from tests.streams.sources.debezium_events import encode, mysql_event, pg_event, row

SOURCES = """
sources:
  - name: articles
    topic: dbserver1.public.articles
    format: debezium-json
    doc_id: "article-{id}"
    title: "{title}"
    text: "{body}"
    metadata: {author: "{author}", year: "{year}", label: "{author} ({year})"}
    version: source.lsn
    where: {status: published}
  - name: shop
    topic: mysql-server-1.inventory.articles
    format: debezium-json
    doc_id: "{id}"
    text: "{title}: {body}"
    version: source.binlog
    acl: readers
  - name: notes
    topic: notes
    format: json
    doc_id: "note-{note.id}"
    text: "{note.text}"
    version: updated_at
"""


def contract(name: str) -> SourceContract:
    return SourceContract.of(next(m for m in parse_sources(SOURCES) if m.name == name))


def check(source: SourceContract, value: Any, key: Any = None, offset: int = 0
          ) -> Accepted[DocumentEvent] | Rejected | None:
    return source.check(RawMessage("t", 0, offset, encode(key), encode(value), 1_700_000_000.0))


def document(source: SourceContract, value: Any, key: Any = None) -> DocumentEvent:
    checked = check(source, value, key)
    assert isinstance(checked, Accepted), checked
    return checked.record


def reasons(checked: object) -> list[str]:
    assert isinstance(checked, Rejected), checked
    return [f"{e.loc}: {e.msg}" for e in checked.errors]


def test_a_postgres_row_becomes_a_document_with_typed_metadata() -> None:
    articles = contract("articles")
    event = document(articles, pg_event("c", 100, after=row(1, "Title", "Body text.")), {"id": 1})
    assert (event.doc_id, event.version, event.op, event.source) == ("article-1", 100, "upsert", "articles")
    assert event.title == "Title" and event.text == "Body text." and event.acl is None
    assert event.metadata == {"author": "ann", "year": 2024, "label": "ann (2024)"}
    deleted = document(articles, pg_event("d", 120, before={"id": 1}), {"id": 1})
    assert (deleted.doc_id, deleted.version, deleted.op) == ("article-1", 120, "delete")
    assert check(articles, None, {"id": 1}) is None  # the tombstone after a delete
    assert articles.counts.as_dict() == {"records": 3, "mapped": 2, "skipped": 1, "deadlettered": 0}


def test_a_row_that_leaves_the_filter_leaves_the_index_and_nulls_render_empty() -> None:
    articles = contract("articles")
    draft = document(articles, pg_event("u", 130, after=row(2, "T", "B", status="draft")))
    assert draft.op == "delete" and draft.doc_id == "article-2"
    untitled = document(articles, pg_event("u", 131, after=row(3, None, "Body", year=None)))
    assert untitled.title is None and untitled.metadata == {"author": "ann", "label": "ann ()"}


def test_mysql_rows_carry_their_acl_and_binlog_versions() -> None:
    shop = contract("shop")
    first = document(shop, mysql_event("c", "mysql-bin.000003", 154, after=row(7, "T", "B", readers=["group:eng"])))
    second = document(shop, mysql_event("u", "mysql-bin.000003", 484, before=row(7, "T", "B"),
                                        after=row(7, "T", "C", readers="user:ann, group:ops")))
    assert first.doc_id == "7" and first.acl == ["group:eng"] and first.text == "T: B"
    assert second.acl == ["user:ann", "group:ops"] and second.version > first.version
    assert document(shop, mysql_event("d", "mysql-bin.000004", 4, before=row(7, "T", "B"))).op == "delete"


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("articles", pg_event("c", 1, after={k: v for k, v in row(1, "T", "B").items() if k != "body"}),
     "row.body: source articles: text: the row has no field"),
    ("articles", pg_event("t", 2), "value.op: source articles: a truncate removes every row"),
    ("articles", {"op": "c", "after": row(1, "T", "B"), "source": {}}, "value.source.lsn: source articles: version"),
    ("articles", pg_event("c", 3, after=row(1, "T", "   ")), "source articles: the document is invalid"),
    ("articles", pg_event("c", -4, after=row(1, "T", "B")), "version: source articles: the document is invalid"),
    ("articles", pg_event("c", 5, after=row(1, "T", "B", year=[1])), "row.year: source articles: metadata.year"),
    ("shop", mysql_event("c", "mysql-bin.000001", 4, after=row(8, "T", "B", readers=[])), "row.readers: source shop: "
                                                                                          "acl: 'readers' is empty"),
    ("shop", mysql_event("c", "mysql-bin.000001", 4, after=row(8, "T", "B", readers=[1])), "must hold principals"),
    ("shop", mysql_event("c", "mysql-bin.000001", 4, after=row(8, "T", "B")), "row.readers"),
    ("shop", mysql_event("c", "binlog", 4, after=row(8, "T", "B", readers="u:a")), "value.source: source shop"),
    ("notes", {"note": {"id": 1, "text": "x"}, "updated_at": "yesterday"}, "neither an integer nor an ISO-8601 time"),
    ("notes", {"note": {"id": 1, "text": "x"}}, "row.updated_at: source notes: version: the row has no"),
    ("notes", {"note": {"id": None, "text": "x"}, "updated_at": 1}, "row.note.id: source notes: doc_id: 'note.id' is "
                                                                    "null"),
    ("notes", {"note": {"id": "", "text": "x"}, "updated_at": 1}, "doc_id: 'note.id' is empty"),
    ("articles", pg_event("u", 6, after={k: v for k, v in row(1, "T", "B").items() if k != "status"}),
     "row.status: source articles: where: the row has no field 'status'"),
    ("articles", pg_event("u", 7, after=row(1, "T", "B", status=True)), "where: 'status' holds a bool, the filter str"),
])
def test_a_row_that_cannot_be_mapped_is_a_dead_letter_naming_source_and_reason(name: str, value: Any,
                                                                               expected: str) -> None:
    source = contract(name)
    found = reasons(check(source, value))
    assert any(expected in reason for reason in found), found
    assert source.counts.deadlettered == 1


def test_json_rows_version_by_time_and_a_delete_needs_a_version() -> None:
    notes = contract("notes")
    older = document(notes, {"note": {"id": 1, "text": "a"}, "updated_at": "2024-05-01T10:00:00Z"})
    newer = document(notes, {"note": {"id": 1, "text": "b"}, "updated_at": "2024-05-01T10:00:01+00:00"})
    naive = document(notes, {"note": {"id": 1, "text": "c"}, "updated_at": "2024-05-01T10:00:02"})
    assert older.doc_id == "note-1" and older.version < newer.version < naive.version
    tombstone = reasons(check(notes, None, {"note": {"id": 1}}))
    assert any("version: the row has no 'updated_at'" in reason for reason in tombstone)


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"op": "c", "after": {"id": ' + b"9" * 5000 + b"}}"])
def test_json_no_parser_can_hold_is_a_dead_letter_not_a_crash(raw: bytes) -> None:
    articles = contract("articles")
    checked = articles.check(RawMessage("t", 0, 0, raw, raw, None))
    assert isinstance(checked, Rejected) and checked.errors[0].msg.startswith("source articles: not readable JSON")
