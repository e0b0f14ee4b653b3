"""Every parameter is validated at the edge: non-finite, out-of-range and malformed numbers, lone surrogates,
repeated parameters and duplicate slices are a 400 with valid JSON, never a 500; a `segment` is refused alike on
HTTP and on Kafka."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import ValidationError

from schemas import QueryEvent
from streams.web.evaluation import evaluation_query
from streams.web.parameters import InvalidParameter, integer, seconds
from tests.streams.web.test_http import harness, with_client

GETS = [
    "/evaluation?by=window&window=nan", "/evaluation?by=window&window=inf", "/evaluation?by=window&window=1e-300",
    "/evaluation?by=window&window=5e-324", "/evaluation?by=window&window=0", "/evaluation?since=nan",
    "/evaluation?since=inf", "/evaluation?since=1e400", "/evaluation?since=99999999999999999999d",
    "/evaluation?by=slice&slices=length,length", "/evaluation?by=version,version", "/evaluation?by=arm&by=version",
    "/search?q=tea&k=1_000", "/search?q=tea&k=%201", "/search?q=tea&k=1e2", "/search?q=tea&version=1_0",
    "/search?q=tea&doc_id=a&doc_id=b", "/search?q=tea&q=bikes", "/search?q=tea&k=0", "/search?q=tea&k=1001",
    "/search?q=tea&segment=a%C2%85", "/search?q=tea&segment=a%E2%80%A8", "/search?q=tea&segment=a%E2%80%AE",
]
POSTS = [("/search", '{"q": "tea\\ud800"}'), ("/search", '{"q": "tea", "filter": {"source": "\\ud800"}}'),
         ("/documents/versions", '{"doc_ids": ["a\\ud800"]}'), ("/search", '{"q": "tea", "k": 2.0}'),
         ("/search", '{"q": "tea", "k": NaN}'), ("/search", '{"q": "tea", "segment": "a\\u2028"}')]


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("request_", [*(("GET", path, None) for path in GETS),
                                      *(("POST", path, body) for path, body in POSTS)])
def test_a_bad_parameter_is_a_400_with_a_reason_never_a_500(tmp_path: Path,
                                                             request_: tuple[str, str, str | None]) -> None:
    method, path, body = request_

    async def scenario(client: TestClient) -> tuple[int, Any]:
        response = await client.request(method, path, data=body, headers={"Content-Type": "application/json"})
        return response.status, strict_json(await response.text())

    with harness(tmp_path) as running:
        status, answer = with_client(running, scenario)
    assert status == 400 and answer.get("error"), answer


def test_good_parameters_are_answered(tmp_path: Path) -> None:
    async def scenario(client: TestClient) -> list[tuple[int, Any]]:
        out = []
        for path in ("/evaluation?by=window&window=60&since=1h&_=1&_=2", "/evaluation?by=slice&slices=",
                     "/search?q=tea&segment=Acme%C2%A0Inc&user_id=%F0%9F%91%A9%E2%80%8D%F0%9F%92%BB&utm=a&utm=b"):
            response = await client.get(path)
            out.append((response.status, strict_json(await response.text())))
        response = await client.post("/documents/versions", json={"doc_ids": ["", "x" * 300, "tea"]})
        out.append((response.status, strict_json(await response.text())))
        return out

    with harness(tmp_path) as running:
        (window, status), (slices, _), (search, _), (versions, answer) = with_client(running, scenario)
    assert (window, status["window_s"], slices) == (200, 60.0, 200) and search == 200
    assert versions == 200 and answer["versions"] == {"": None, "x" * 300: None, "tea": 1}


def test_the_evaluation_window_and_since_are_finite_and_bounded() -> None:
    for window in ("nan", "inf", "1e-300", "0", "0.5", "1e400", "40000000"):
        with pytest.raises(InvalidParameter):
            evaluation_query({"by": "window", "window": window}, now=1_000_000.0)
    for since in ("nan", "inf", "-inf", "1e400", "-5", "1e5h", "1_0h"):
        with pytest.raises(InvalidParameter):
            evaluation_query({"since": since}, now=1_000_000.0)
    query = evaluation_query({"by": "window", "window": "90", "since": "1h"}, now=1_000_000.0)
    assert query["window_s"] == 90.0 and query["since"] == 1_000_000.0 - 3600


def test_numbers_are_plain_decimals() -> None:
    assert integer("1000", "k") == 1000 and seconds("0.5", "window", 0.1, 10) == 0.5
    for text in ("1_000", " 1", "+1", "1e3", "0x10", "", "١٢"):
        with pytest.raises(InvalidParameter):
            integer(text, "k")


@pytest.mark.parametrize("label", ["a\x85", "a\u2028b", "a\u2029", "a\u202eb", "a\u2066b", "a\tb"])
def test_kafka_refuses_the_segments_and_user_ids_http_refuses(label: str) -> None:
    for field in ("segment", "user_id"):
        with pytest.raises(ValidationError):
            QueryEvent.model_validate({"query_id": "q", "text": "tea", field: label})


@pytest.mark.parametrize("label", ["Acme\xa0Inc", "\U0001f469\u200d\U0001f4bb", "\u0645\u06cc\u200c\u062e",
                                   "a\u3000b", "\U0001fae8"])
def test_ordinary_labels_are_accepted(label: str) -> None:
    event = QueryEvent.model_validate({"query_id": "q", "text": "tea", "segment": label, "user_id": label})
    assert event.segment == event.user_id == label
