"""Property-based: no input makes the validation gate or the chunker raise; rejects always dead-letter."""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from schemas import DeadLetter, DocumentEvent, FeedbackEvent, QueryEvent
from streams.ml.chunking import Chunker
from streams.state.encoder import OnnxEncoder
from streams.validation import Accepted, RawMessage, Rejected, validate_message

CONTRACTS = [(DocumentEvent, "doc_id"), (QueryEvent, "query_id"), (FeedbackEvent, "query_id")]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=12)
documentish = st.fixed_dictionaries({}, optional={
    "doc_id": st.text(max_size=20) | st.integers(), "version": st.integers() | st.text(max_size=3),
    "op": st.sampled_from(["upsert", "delete", "merge", ""]), "text": st.text(max_size=50) | st.none(),
    "title": json_values, "metadata": json_values, "extra": json_values})


def check(key: bytes | None, value: bytes | None) -> None:
    for model, key_field in CONTRACTS:
        result = validate_message(RawMessage("t", 0, 1, key, value), model, key_field)
        assert isinstance(result, (Accepted, Rejected))
        if isinstance(result, Rejected):
            letter = DeadLetter.model_validate_json(result.dead_letter()[1].model_dump_json())
            assert letter.errors and all(e.msg for e in letter.errors)
            stored = letter.value
            if value is None:
                assert stored is None
            elif letter.value_encoding == "base64":
                assert base64.b64decode(stored or "") == value
            else:
                assert (stored or "").encode("utf-8") == value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.none(), st.binary(max_size=20) | st.none())
def test_arbitrary_bytes_only_ever_validate_or_dead_letter(value: bytes | None, key: bytes | None) -> None:
    check(key, value)


@settings(max_examples=300, deadline=None)
@given(documentish, st.booleans())
def test_arbitrary_json_objects_only_ever_validate_or_dead_letter(record: dict[str, object], key_matches: bool) -> None:
    doc_id = record.get("doc_id")
    key = str(doc_id).encode() if key_matches and doc_id is not None else b"k"
    check(key, json.dumps(record).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=2000))
def test_chunking_never_raises_and_covers_every_token(encoder: OnnxEncoder, text: str) -> None:
    chunker = Chunker(encoder.tokenizer, 24, 6, encoder.max_tokens)
    chunks = chunker.split(text)
    fresh = Tokenizer.from_str(encoder.tokenizer.to_str())
    fresh.no_truncation()
    fresh.no_padding()
    offsets = fresh.encode(text, add_special_tokens=False).offsets
    for chunk in chunks:
        expected = text[chunk.start:chunk.end]
        assert chunk.text.strip() and chunk.text in (expected, expected.strip())
    for start, end in offsets:
        if end > start:
            assert any(c.start <= start and end <= c.end for c in chunks), (text, start, end)
