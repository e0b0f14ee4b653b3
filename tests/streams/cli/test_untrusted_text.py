"""No producer-controlled string is ever read as markup by the CLI: random markup-like strings (`[`, `[/x]`,
`[bold]`, `\\[`, control characters) in every field a command shows go through search, ask, evaluation,
experiment status, deadletter inspect, models, status and the error handler without an exception, and are shown
as they are."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from schemas import DeadLetter
from schemas.errors import GristmillError
from streams import cli
from streams.cli import context, deadletter, experiments, query, stack
from streams.cli.context import console, untrusted

MARKUP_PIECES = ["[", "]", "/", "\\", "[/x]", "[bold]", "[/]", "\\[", "[red]", "[/mk]", "[/seg]", "[link=x]", "x",
                 "é", "日", " ", "\x1b[2J", "\u202e", ":smile:", "%s", "{0}"]
untrusted_text = st.one_of(
    st.lists(st.sampled_from(MARKUP_PIECES), min_size=1, max_size=8).map("".join),
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30),
)
runner = CliRunner()
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def wide_console() -> Iterator[None]:
    """A console wide enough that no cell is folded or cut (so what was printed can be looked for)."""
    width = console.width
    console.width = 100_000
    yield
    console.width = width


def shown(value: str, output: str) -> bool:
    """`value` appears in `output` as untrusted text shows it, line by line (whitespace aside: tables pad it)."""
    flat = "".join(output.split())
    return all("".join(line.split()) in flat for line in untrusted(value).plain.split("\n"))


def invoke(*args: str) -> str:
    result = runner.invoke(cli.app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_reported_strings_are_shown_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("[/mk]", "mk-bad[/x]", "[/seg]", "[bold]x[/bold]", "\\[", "[", "trailing\\"):
        check_search(monkeypatch, value)


@given(untrusted_text)
@EXAMPLES
def test_search_shows_any_ids_and_texts(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    check_search(monkeypatch, value)


def check_search(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setattr(query, "stack_json", lambda *a, **k: answer(value))
    output = invoke("search", "--", f"q{value}")
    assert shown(value, output) and output.count("─") > 0


def answer(value: str) -> dict[str, Any]:
    return {"query": value, "latency_ms": 1.0, "model_version": value, "index_version": value, "mode": "dense",
            "cached": False, "hits": [{"score": 0.5, "doc_id": value, "chunk": 0, "text": value}]}


@given(untrusted_text)
@EXAMPLES
def test_ask_shows_any_response(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    class RoundTrip:
        def __init__(self, settings: Any) -> None: ...
        def __enter__(self) -> RoundTrip: return self
        def __exit__(self, *exc: object) -> None: ...
        def send(self, *args: Any, **kwargs: Any) -> str: return value

        def wait(self, ids: list[str], timeout: float) -> dict[str, Any]:
            return {value: SimpleNamespace(response=answer(value), round_trip_s=0.01)}

    import streams.roundtrip
    monkeypatch.setattr(query, "require_kafka", lambda s: s)
    monkeypatch.setattr(streams.roundtrip, "QueryRoundTrip", RoundTrip)
    assert shown(value, invoke("ask", "--", f"q{value}"))


def rows(value: str) -> list[dict[str, Any]]:
    return [{"version": value, "arm": value, "slice": value, "queries": 3, "judged": 1, "positive_rate": 0.5,
             "positive_rate_ci": [0.1, 0.9], "mrr@10": 0.5, "ndcg@10": None}]


@given(untrusted_text)
@EXAMPLES
def test_evaluation_shows_any_slice_and_version(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    body = {"by": ["version", "arm", "slice"], "rows": rows(value), "offline": {value: {"held_out_nDCG@10": 0.5}}}
    monkeypatch.setattr(experiments, "_stack_json", lambda path: body)
    assert shown(value, invoke("evaluation", "--by", "version,arm,slice", "--since", "1h"))


@given(untrusted_text)
@EXAMPLES
def test_experiment_status_shows_any_experiment(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    experiment = {"id": value, "version": value, "baseline": value, "mode": value, "fraction": 0.5, "state": value,
                  "decision": value, "reason": value}
    body = {"latest": {"experiment": experiment, "would_decide": {"action": value, "reason": value},
                       "evidence": {value: 0.5}, "slices": rows(value)}}
    monkeypatch.setattr(experiments, "_stack_json", lambda path: body)
    assert shown(value, invoke("experiment", "status"))


@given(untrusted_text)
@EXAMPLES
def test_deadletter_inspect_shows_any_record(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    import streams.deadletters

    letter = DeadLetter(topic=value, partition=0, offset=1, key=value, value=value,
                        errors=[{"loc": value, "msg": value}], ts=datetime.now(UTC))  # type: ignore[list-item]

    def read(settings: Any, limit: int | None = None, foreign: Any = None) -> Iterator[DeadLetter]:
        foreign.count, foreign.examples = 1, [value]
        yield letter

    monkeypatch.setattr(deadletter, "require_kafka", lambda s: s)
    monkeypatch.setattr(streams.deadletters, "read_dead_letters", read)
    assert shown(value, invoke("deadletter", "inspect"))


@given(untrusted_text)
@EXAMPLES
def test_models_shows_any_version(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    import streams.ml.serving

    model = SimpleNamespace(version=value, metrics={}, created_at=value, lineage={"base_version": value,
                                                                                  "pairs": value})
    registry = SimpleNamespace(current=lambda: model, versions=lambda: [model])
    monkeypatch.setattr(streams.ml.serving, "open_registry", lambda settings: registry)
    assert shown(value, invoke("models"))


@given(untrusted_text)
@EXAMPLES
def test_status_shows_any_health(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    info = {"pid": 1, "kafka": value, "http": "http://127.0.0.1:1", "agents": [value]}
    health = {"model_version": value, "encoder_provider": value, "index": {"documents": 1, "chunks": 2},
              "index_version": value, "rollout": {"previous": value, "version": value, "state": value, "copied": 1,
                                                  "documents": 2, "progress": 0.5, "embedded": 1, "error": value},
              "trainer": {"state": value, "waiting_for": value, "last": {"version": value, "reason": value}}}
    monkeypatch.setattr(stack, "running", lambda settings: info)
    monkeypatch.setattr(stack, "_health", lambda *a, **k: health)
    assert shown(value, invoke("status"))


@given(untrusted_text)
@EXAMPLES
def test_the_error_handler_shows_any_message(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             value: str) -> None:
    def failing(*args: Any, **kwargs: Any) -> None:
        raise GristmillError(value)

    check_main(monkeypatch, capsys, failing, value)


def check_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], failing: Callable[..., None],
               value: str) -> None:
    monkeypatch.setattr(query, "stack_json", failing)
    monkeypatch.setattr(sys, "argv", ["gristmill", "search", "--", "anything"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    output = capsys.readouterr().out
    assert exited.value.code == 1 and output.startswith("error: ") and shown(value, output)
    assert "Traceback" not in output


def test_an_unexpected_error_with_markup_is_one_line_too(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    def failing(*args: Any, **kwargs: Any) -> None:
        raise ValueError("[/x] closes nothing")

    check_main(monkeypatch, capsys, failing, "[/x] closes nothing")


def test_control_characters_are_shown_escaped() -> None:
    assert untrusted("a\x1b[2Jb\u202ec").plain == "a\\x1b[2Jb\\u202ec"
    assert untrusted("line\nnext\ttab").plain == "line\nnext\\ttab"  # a table cannot measure a tab


def test_a_refusal_with_markup_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    exit_ = context.fail("cannot read ", Path("[/x]"), ": gone")
    assert exit_.exit_code == 1 and capsys.readouterr().out.strip() == "cannot read [/x]: gone"


def test_status_watch_follows_a_challenger_build(monkeypatch: pytest.MonkeyPatch) -> None:
    build = {"previous": "v1", "version": "[/x]v2", "state": "copying", "copied": 3, "documents": 8}
    answers = iter([{"rollout": None, "challenger_build": build, "trainer": None}])

    def health(*args: Any, **kwargs: Any) -> dict[str, Any]:
        for answer in answers:
            return answer
        raise KeyboardInterrupt  # the operator's Ctrl-C

    monkeypatch.setattr(stack, "_health", health)
    monkeypatch.setattr(stack.time, "sleep", lambda s: None)
    with console.capture() as captured:
        stack.watch_progress("http://127.0.0.1:1")
    assert "challenger build v1 -> [/x]v2 (copying)" in captured.get()
