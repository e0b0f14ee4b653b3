from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas import TOPIC_RECORDS, DocumentEvent, FeedbackEvent, InvalidFilter, QueryEvent, validate_filter
from schemas.export import PUBLISHED_DIR, render_json_schemas
from schemas.records import AttributedQueryEvent


def test_published_json_schemas_match_the_models() -> None:
    """Producers in other languages validate against these files: they must never drift."""
    rendered = render_json_schemas()
    assert set(rendered) == {f"{topic}.json" for topic in TOPIC_RECORDS}
    for name, text in rendered.items():
        published = PUBLISHED_DIR / name
        assert published.is_file(), f"run `python -m schemas.export`: {name} is missing"
        assert published.read_text(encoding="utf-8") == text, f"run `python -m schemas.export`: {name} is stale"


def test_document_schema_states_the_contract() -> None:
    schema = json.loads(render_json_schemas()["documents.json"])
    assert set(schema["required"]) == {"doc_id", "version", "op"}
    assert schema["properties"]["version"]["minimum"] == 0
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("fields", [{}, {"label": 1, "rating": 5}])
def test_feedback_needs_exactly_one_judgement(fields: dict[str, int]) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        FeedbackEvent(query_id="q", doc_id="d", **fields)


def test_feedback_accepts_a_label_or_a_rating() -> None:
    assert FeedbackEvent(query_id="q", doc_id="d", label=-1).label == -1
    assert FeedbackEvent(query_id="q", doc_id="d", rating=4).rating == 4


@pytest.mark.parametrize(("filter_", "message"), [
    ({"metadata.lang": {"like": "d%"}}, "unknown operator 'like'"),
    ({"metadata.lang": {}}, "unknown operator"),
    ({"metadata.lang": {"any": ["de", 1]}}, "any mixes types"),
    ({"metadata.lang": {"any": []}}, "any must be a list of 1 to"),
    ({"metadata.year": {"gte": 2020, "lt": "2024-01-01"}}, "mixes numbers and dates"),
    ({"metadata.lang": {"gte": "de"}}, "a range is over numbers or ISO-8601 dates"),
    ({"source": {"gte": 1}}, "a range needs numbers or dates; source holds strings"),
    ({"metadata.year": {"any": [2020], "gte": 2020}}, "one condition per key"),
    ({"metadata.draft": {"exists": False}}, "exists must be true"),
    ({"metadata.a.b": "x"}, "cannot filter on ['metadata.a.b']"),
    ({"text": "x"}, "cannot filter on ['text']"),
    ({"metadata.score": float("nan")}, "finite number"),
    ({"version": -1}, "integer from 0"),
    ({"metadata.lang\n": "de"}, "cannot filter on"),  # a key is matched whole
    ({"metadata.n": {"lte": 10**400}}, "within 64 bits"),
    ({"version": {"gte": "2024-01-01"}}, "over integers, not dates"),
    ({"metadata.t": {"gte": "0001-01-01T00:00+05:00"}}, "ISO-8601 dates"),
])
def test_a_filter_that_cannot_be_evaluated_is_refused_with_its_reason(filter_: dict, message: str) -> None:
    with pytest.raises(InvalidFilter) as refused:
        validate_filter(filter_)
    assert message in str(refused.value)
    with pytest.raises(ValidationError, match="filter"):  # the queries contract refuses it alike
        QueryEvent(query_id="q", text="tea", filter=filter_)


def test_filters_are_checked_and_their_dates_given_an_offset() -> None:
    checked = validate_filter({"metadata.lang": {"any": ["de", "fr"]}, "metadata.year": {"gte": 2020, "lt": 2024.5},
                               "metadata.published": {"gte": "2024-01-01"}, "metadata.draft": {"exists": True},
                               "source": "wiki", "version": 3, "metadata.flag": True})
    assert checked["metadata.published"] == {"gte": "2024-01-01T00:00:00+00:00"}  # a date without offset is UTC
    assert validate_filter({"metadata.t": {"lt": "2024-07-01T12:00:00+05:30:15"}}) == {
        "metadata.t": {"lt": "2024-07-01T06:29:45+00:00"}}  # the instant, in UTC (Qdrant takes no offset seconds)
    assert checked["metadata.lang"] == {"any": ["de", "fr"]} and checked["metadata.flag"] is True
    assert QueryEvent(query_id="q", text="tea", filter={"metadata.year": {"gte": 2020}}).filter == {
        "metadata.year": {"gte": 2020}}


@pytest.mark.parametrize(("acl", "where"), [
    ([], "acl"),  # no principal at all: leave `acl` out for a public document
    (["group:eng"] * 257, "acl"),
    (["u" * 201], "acl.0"),
    (["user alice"], "acl.0"),
    (["group:eng", ""], "acl.1"),
    (["user:\u202eecila"], "acl.0"),  # a bidi override would disguise the name
    ([7], "acl.0"),
])
def test_an_acl_that_cannot_be_enforced_is_refused(acl: list, where: str) -> None:
    with pytest.raises(ValidationError) as refused:
        DocumentEvent(doc_id="d", version=1, op="upsert", text="t", acl=acl)
    assert {".".join(map(str, e["loc"])) for e in refused.value.errors()} == {where}


def test_principals_are_optional_on_queries_unless_required() -> None:
    assert QueryEvent(query_id="q", text="t").principals is None
    assert QueryEvent(query_id="q", text="t", principals=["user:alice", "group:eng"]).principals == [
        "user:alice", "group:eng"]
    assert AttributedQueryEvent(query_id="q", text="t", principals=[]).principals == []  # public documents only
    with pytest.raises(ValidationError) as refused:
        AttributedQueryEvent(query_id="q", text="t")
    assert refused.value.errors()[0]["loc"] == ("principals",)
    with pytest.raises(ValidationError):
        QueryEvent(query_id="q", text="t", principals=["a b"])
    assert DocumentEvent(doc_id="d", version=1, op="upsert", text="t", acl=["u" * 200]).acl == ["u" * 200]
