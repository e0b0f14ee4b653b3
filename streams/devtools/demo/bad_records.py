"""Kinds of bad `documents` records, each with the field its dead-letter reason must name."""

from __future__ import annotations

import json
from dataclasses import dataclass

from schemas.records import MAX_TEXT_CHARS


@dataclass(frozen=True)
class BadRecord:
    kind: str
    key: bytes | None
    value: bytes | None
    loc: str  # the `loc` of the first reason


def _doc(**fields: object) -> bytes:
    base: dict[str, object] = {"doc_id": "bad", "version": 1, "op": "upsert", "text": "fine text"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not _DROP}).encode()


_DROP = object()


def bad_documents(prefix: str = "bad") -> list[BadRecord]:
    """At least 20 distinct ways a `documents` record can be wrong."""
    k = prefix.encode()
    return [
        BadRecord("not json", k, b"this is not json", "value"),
        BadRecord("truncated json", k, b'{"doc_id": "bad", "version": 1,', "value"),
        BadRecord("invalid utf-8", k, b'{"doc_id": "bad\xff\xfe", "version": 1}', "value"),
        BadRecord("empty value", k, b"", "value"),
        BadRecord("null value", k, None, "value"),
        BadRecord("json array", k, b"[1, 2, 3]", "value"),
        BadRecord("json string", k, b'"a string"', "value"),
        BadRecord("missing doc_id", k, _doc(doc_id=_DROP), "doc_id"),
        BadRecord("missing version", k, _doc(doc_id=prefix, version=_DROP), "version"),
        BadRecord("missing op", k, _doc(doc_id=prefix, op=_DROP), "op"),
        BadRecord("extra field", k, _doc(doc_id=prefix, colour="blue"), "colour"),
        BadRecord("version as string", k, _doc(doc_id=prefix, version="3"), "version"),
        BadRecord("version as float", k, _doc(doc_id=prefix, version=1.5), "version"),
        BadRecord("version as bool", k, _doc(doc_id=prefix, version=True), "version"),
        BadRecord("negative version", k, _doc(doc_id=prefix, version=-1), "version"),
        BadRecord("unknown op", k, _doc(doc_id=prefix, op="merge"), "op"),
        BadRecord("upsert without text", k, _doc(doc_id=prefix, text=_DROP), "value"),
        BadRecord("empty text", k, _doc(doc_id=prefix, text=""), "value"),
        BadRecord("blank text", k, _doc(doc_id=prefix, text=" \n\t "), "value"),
        BadRecord("text as number", k, _doc(doc_id=prefix, text=42), "text"),
        BadRecord("oversized text", k, _doc(doc_id=prefix, text="x" * (MAX_TEXT_CHARS + 1)), "text"),
        BadRecord("key disagrees with doc_id", b"someone-else", _doc(doc_id=prefix), "key"),
        BadRecord("missing key", None, _doc(doc_id=prefix), "key"),
        BadRecord("empty doc_id", b"", _doc(doc_id=""), "doc_id"),
        BadRecord("control char in doc_id", k, _doc(doc_id="bad\nid"), "doc_id"),
        BadRecord("doc_id too long", k, _doc(doc_id="d" * 300), "doc_id"),
        BadRecord("title not a string", k, _doc(doc_id=prefix, title=7), "title"),
        BadRecord("metadata not an object", k, _doc(doc_id=prefix, metadata=["a"]), "metadata"),
        BadRecord("nested metadata", k, _doc(doc_id=prefix, metadata={"a": {"b": 1}}), "metadata.a"),
        BadRecord("updated_at not a time", k, _doc(doc_id=prefix, updated_at="yesterday"), "updated_at"),
    ]


def poison_documents(prefix: str = "poison") -> list[BadRecord]:
    """Records that once took their valid neighbours down: dead letters too large for the producer (as received,
    JSON-escaped, base64-grown), and values the store cannot hold."""
    k = prefix.encode()
    return [
        BadRecord("1.9 MB text", k, _doc(doc_id=prefix, text="lorem ipsum " * 160_000), "text"),
        BadRecord("600 KB of quotes", k, _doc(doc_id=prefix, text='"' * 600_000), "text"),
        BadRecord("800 KB not UTF-8", k, b"\xff\xfe" + bytes(range(128, 256)) * 6_400, "value"),
        BadRecord("NaN metadata", k, _doc(doc_id=prefix).replace(b'"text"', b'"metadata": {"m": NaN}, "text"'),
                  "metadata.m"),
        BadRecord("Infinity metadata", k, _doc(doc_id=prefix).replace(b'"text"', b'"metadata": {"m": -Infinity}, '
                                                                                  b'"text"'), "metadata.m"),
        BadRecord("metadata beyond 64 bits", k, _doc(doc_id=prefix, metadata={"m": 2**64}), "metadata.m"),
        BadRecord("1.2 MB key", b"k" * 1_200_000, _doc(doc_id=prefix), "key"),
    ]


def bad_queries(prefix: str = "bad") -> list[BadRecord]:
    """Queries that must be dead-lettered (filters of the wrong type crashed the query agent once)."""
    def query(**fields: object) -> bytes:
        return json.dumps({"query_id": prefix, "text": "a question", **fields}).encode()

    k = prefix.encode()
    return [
        BadRecord("filter version float", k, query(filter={"version": 1.5}), "filter"),
        BadRecord("filter version null", k, query(filter={"version": None}), "filter"),
        BadRecord("filter version 2**64", k, query(filter={"version": 2**64}), "filter"),
        BadRecord("filter version bool", k, query(filter={"version": True}), "filter"),
        BadRecord("filter source list", k, query(filter={"source": ["a"]}), "filter.source"),
        BadRecord("filter source object", k, query(filter={"source": {"a": 1}}), "filter.source"),
        BadRecord("unknown filter field", k, query(filter={"text": "x"}), "filter.text"),
        BadRecord("text too long", k, query(text="x" * 4_001), "text"),
        BadRecord("top_k 0", k, query(top_k=0), "top_k"),
        BadRecord("not json", k, b"{query", "value"),
    ]


def bad_feedback(prefix: str = "bad") -> list[BadRecord]:
    """Feedback that must be dead-lettered at the gate (strict booleans are not labels)."""
    def feedback(**fields: object) -> bytes:
        return json.dumps({"query_id": prefix, "doc_id": "d", **fields}).encode()

    k = prefix.encode()
    return [
        BadRecord("label true", k, feedback(label=True), "label"),
        BadRecord("label 1.0", k, feedback(label=1.0), "label"),
        BadRecord("rating true", k, feedback(rating=True), "rating"),
        BadRecord("label and rating", k, feedback(label=1, rating=5), "value"),
        BadRecord("no judgement", k, feedback(), "value"),
        BadRecord("rating 9", k, feedback(rating=9), "rating"),
    ]
