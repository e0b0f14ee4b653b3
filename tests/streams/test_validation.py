from __future__ import annotations

import base64
import hashlib
import json

import pytest

from schemas import DocumentEvent, FeedbackEvent, ModelUpdate, QueryEvent
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
    _, letter = rejected.dead_letter()
    assert (letter.topic, letter.partition, letter.offset, letter.key, letter.value) == (
        "documents", 2, 41, "k", "not json")
    assert letter.value_encoding == "utf-8" and letter.errors[0].loc == "value"


def test_dead_letter_base64_encodes_bytes_that_are_not_utf8() -> None:
    raw = b"\xff\xfe\x00binary"
    rejected = validate_message(message(b"\xfe", raw), DocumentEvent, "doc_id")
    assert isinstance(rejected, Rejected)
    _, letter = rejected.dead_letter()
    assert letter.value_encoding == "base64" and base64.b64decode(letter.value or "") == raw
    assert letter.key_encoding == "base64" and base64.b64decode(letter.key or "") == b"\xfe"
    assert "invalid UTF-8" in letter.errors[0].msg


def test_query_records_use_the_same_gate() -> None:
    ok = validate_message(message(b"q1", b'{"query_id": "q1", "text": "hi", "top_k": 3}'), QueryEvent, "query_id")
    assert isinstance(ok, Accepted) and ok.record.top_k == 3
    bad = validate_message(message(b"q1", b'{"query_id": "q1", "text": "hi", "top_k": 0}'), QueryEvent, "query_id")
    assert isinstance(bad, Rejected) and bad.errors[0].loc == "top_k"


@pytest.mark.parametrize("value", [
    json.dumps({"doc_id": "q", "version": 1, "op": "upsert", "text": '"' * 600_000}).encode(),  # escaping doubles it
    json.dumps({"doc_id": "b", "version": 1, "op": "upsert", "text": "x" * 1_900_000}).encode(),
    b"\xff\xfe" + bytes(range(256)) * 3_200,  # 800 KB of non-UTF-8 bytes: base64 grows it
], ids=["600KB-of-quotes", "1.9MB-text", "800KB-binary"])
def test_a_dead_letter_always_fits_and_says_what_it_kept(value: bytes) -> None:
    rejected = validate_message(message(b"k" * 4_000, value), DocumentEvent, "doc_id")
    assert isinstance(rejected, Rejected)
    key, letter = rejected.dead_letter(900_000)
    assert len(key or b"") + len(letter.model_dump_json().encode()) <= 900_000
    assert letter.value_truncated and letter.value_size == len(value) and letter.key_truncated
    assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
    assert (letter.topic, letter.partition, letter.offset) == ("documents", 2, 41) and letter.errors
    kept = base64.b64decode(letter.value or "") if letter.value_encoding == "base64" else (letter.value or "").encode()
    assert 100_000 < len(kept) < len(value) and value.startswith(kept)  # a prefix of the value as received


def test_a_small_dead_letter_is_kept_whole() -> None:
    rejected = validate_message(message(b"d1", b'{"doc_id": "d1"}'), DocumentEvent, "doc_id")
    assert isinstance(rejected, Rejected)
    key, letter = rejected.dead_letter(900_000)
    assert key == b"d1" and letter.value == '{"doc_id": "d1"}' and not letter.value_truncated
    assert letter.value_size is None and letter.value_sha256 is None


@pytest.mark.parametrize(("model", "key", "value", "loc"), [
    (DocumentEvent, b"d", b'{"doc_id": "d", "version": 1, "op": "upsert", "text": "x", "metadata": {"m": NaN}}',
     "metadata.m"),
    (DocumentEvent, b"d", b'{"doc_id": "d", "version": 1, "op": "upsert", "text": "x", "metadata": {"m": Infinity}}',
     "metadata.m"),
    (DocumentEvent, b"d", b'{"doc_id": "d", "version": 1, "op": "upsert", "text": "x", "metadata": {"m": 1e999}}',
     "metadata.m"),
    (DocumentEvent, b"d", b'{"doc_id": "d", "version": 1, "op": "upsert", "text": "x", "metadata": {"m": '
     b'18446744073709551616}}', "metadata.m"),
    (QueryEvent, b"q", b'{"query_id": "q", "text": "x", "filter": {"version": 1.5}}', "filter"),
    (QueryEvent, b"q", b'{"query_id": "q", "text": "x", "filter": {"version": null}}', "filter"),
    (QueryEvent, b"q", b'{"query_id": "q", "text": "x", "filter": {"version": 18446744073709551616}}', "filter"),
    (QueryEvent, b"q", b'{"query_id": "q", "text": "x", "filter": {"version": true}}', "filter"),
    (QueryEvent, b"q", b'{"query_id": "q", "text": "x", "filter": {"source": ["a"]}}', "filter"),
    (QueryEvent, b"q", b'{"query_id": "q", "text": "x", "filter": {"source": {"a": 1}}}', "filter"),
    (FeedbackEvent, b"q", b'{"query_id": "q", "doc_id": "d", "label": true}', "label"),
    (FeedbackEvent, b"q", b'{"query_id": "q", "doc_id": "d", "label": 1.0}', "label"),
    (FeedbackEvent, b"q", b'{"query_id": "q", "doc_id": "d", "rating": true}', "rating"),
    (ModelUpdate, b"minilm", b'{"version": "../../../../tmp", "uri": "", "status": "rolled_back"}', "version"),
    (ModelUpdate, b"minilm", b'{"version": "v2", "uri": "", "status": "promoted", "metrics": {"a": NaN}}',
     "metrics.a"),
], ids=["nan", "infinity", "overflowing-float", "int-over-64-bits", "filter-float", "filter-null", "filter-huge",
        "filter-bool", "filter-list", "filter-dict", "label-true", "label-1.0", "rating-true", "version-path",
        "metric-nan"])
def test_holes_are_closed(model: type, key: bytes, value: bytes, loc: str) -> None:
    key_field = {DocumentEvent: "doc_id", QueryEvent: "query_id", FeedbackEvent: "query_id"}.get(model)
    result = validate_message(message(key, value), model, key_field)
    assert isinstance(result, Rejected), value
    assert result.errors[0].loc.startswith(loc), result.errors


def test_good_filters_and_labels_still_pass() -> None:
    query = validate_message(message(b"q", b'{"query_id": "q", "text": "x", "filter": {"version": 3, "source": "s"}}'),
                             QueryEvent, "query_id")
    assert isinstance(query, Accepted) and query.record.filter == {"version": 3, "source": "s"}
    for label in (-1, 0, 1):
        raw = json.dumps({"query_id": "q", "doc_id": "d", "label": label}).encode()
        assert isinstance(validate_message(message(b"q", raw), FeedbackEvent, "query_id"), Accepted)
