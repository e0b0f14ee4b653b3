from __future__ import annotations

import base64
import json

import pytest

from schemas import DocumentEvent, QueryEvent
from streams.devtools.demo.bad_records import bad_documents
from streams.validation import Accepted, RawMessage, Rejected, validate_message


def message(key: bytes | None, value: bytes | None) -> RawMessage:
    return RawMessage("documents", 2, 41, key, value, 1_700_000_000.0)


@pytest.mark.parametrize("bad", bad_documents(), ids=lambda b: b.kind)
def test_every_bad_kind_is_rejected_with_a_located_reason(bad) -> None:  # type: ignore[no-untyped-def]
    result = validate_message(message(bad.key, bad.value), DocumentEvent, "doc_id")
    assert isinstance(result, Rejected), bad.kind
    first = result.errors[0]
    assert first.loc == bad.loc or first.loc.startswith(bad.loc + "."), (bad.kind, result.errors)
    assert first.msg and result.reason


def test_there_are_at_least_twenty_distinct_bad_kinds() -> None:
    kinds = bad_documents()
    assert len({b.kind for b in kinds}) == len(kinds) >= 20


def test_valid_record_is_accepted_with_typed_fields() -> None:
    raw = json.dumps({"doc_id": "d1", "version": 3, "op": "upsert", "text": "hello", "title": "T",
                      "metadata": {"lang": "en", "n": 2}, "updated_at": "2026-01-02T03:04:05Z"}).encode()
    result = validate_message(message(b"d1", raw), DocumentEvent, "doc_id")
    assert isinstance(result, Accepted)
    assert result.record.version == 3 and result.record.metadata == {"lang": "en", "n": 2}
    assert result.record.content == "T\n\nhello"


def test_delete_needs_no_text() -> None:
    raw = b'{"doc_id": "d1", "version": 4, "op": "delete"}'
    assert isinstance(validate_message(message(b"d1", raw), DocumentEvent, "doc_id"), Accepted)


def test_dead_letter_keeps_the_record_as_received() -> None:
    rejected = validate_message(message(b"k", b"not json"), DocumentEvent, "doc_id")
    assert isinstance(rejected, Rejected)
    letter = rejected.dead_letter()
    assert (letter.topic, letter.partition, letter.offset, letter.key, letter.value) == (
        "documents", 2, 41, "k", "not json")
    assert letter.value_encoding == "utf-8" and letter.errors[0].loc == "value"


def test_dead_letter_base64_encodes_bytes_that_are_not_utf8() -> None:
    raw = b"\xff\xfe\x00binary"
    rejected = validate_message(message(b"\xfe", raw), DocumentEvent, "doc_id")
    assert isinstance(rejected, Rejected)
    letter = rejected.dead_letter()
    assert letter.value_encoding == "base64" and base64.b64decode(letter.value or "") == raw
    assert letter.key_encoding == "base64" and base64.b64decode(letter.key or "") == b"\xfe"
    assert "invalid UTF-8" in letter.errors[0].msg


def test_query_records_use_the_same_gate() -> None:
    ok = validate_message(message(b"q1", b'{"query_id": "q1", "text": "hi", "top_k": 3}'), QueryEvent, "query_id")
    assert isinstance(ok, Accepted) and ok.record.top_k == 3
    bad = validate_message(message(b"q1", b'{"query_id": "q1", "text": "hi", "top_k": 0}'), QueryEvent, "query_id")
    assert isinstance(bad, Rejected) and bad.errors[0].loc == "top_k"
