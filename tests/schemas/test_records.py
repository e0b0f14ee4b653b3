from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas import TOPIC_RECORDS, FeedbackEvent
from schemas.export import PUBLISHED_DIR, render_json_schemas


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
