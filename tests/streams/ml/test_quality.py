"""The default suites fit real data; your own suites replace them per topic and add one per source."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas import DocumentEvent
from streams.devtools.demo import CORPUS
from streams.ml.monitoring import StreamMonitor
from streams.ml.quality import SUITES_DIR as DEFAULTS
from streams.ml.quality import InvalidSuite, QualityGate, document_row, suite_specs


@pytest.fixture(scope="module")
def gate() -> QualityGate:
    return QualityGate()


def bundled() -> list[DocumentEvent]:
    rows = [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]
    return [DocumentEvent.model_validate({**row, "version": 1, "op": "upsert"}) for row in rows]


def plain(n: int = 300) -> list[DocumentEvent]:
    """Documents as most corpora hold them: an id and a text, no source, no title, no metadata."""
    return [DocumentEvent(doc_id=f"p{i}", version=1, op="upsert",
                          text=f"Paragraph {i} of a plain text corpus, long enough to be worth indexing.")
            for i in range(n)]


@pytest.mark.parametrize("corpus", [bundled, plain], ids=["bundled corpus", "plain text without source"])
def test_the_default_documents_suite_holds_on_real_data(gate: QualityGate, corpus: object) -> None:
    events = corpus()  # type: ignore[operator]
    for start in range(0, len(events), 200):
        outcome = gate.validate("documents", [document_row(e) for e in events[start:start + 200]])
        assert outcome.success, outcome.failed


def test_the_default_documents_suite_still_catches_a_broken_window(gate: QualityGate) -> None:
    broken = [DocumentEvent(doc_id="same", version=i, op="upsert", text="x") for i in range(50)]
    failed = {f.expectation for f in gate.validate("documents", [document_row(e) for e in broken]).failed}
    assert {"expect_column_values_to_be_between", "expect_column_proportion_of_unique_values_to_be_between"} <= failed


def write(folder: Path, name: str, expectations: list[dict[str, object]]) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name.replace(':', '-')}.json").write_text(json.dumps({"name": name, "expectations": expectations}))


def test_own_suites_replace_a_default_and_add_one_per_source(tmp_path: Path) -> None:
    own = tmp_path / "suites"
    needs_source = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "source"}}
    short = {"type": "expect_column_max_to_be_between", "kwargs": {"column": "text_length", "max_value": 30}}
    write(own, "documents", [needs_source])
    write(own, "source:articles", [short])
    gate = QualityGate(own_dir=own, names={"documents", "queries", "feedback", "source:articles", "source:notes"})
    assert gate.suites == ["documents", "feedback", "queries", "source:articles"]
    assert gate.suite_for("source:articles") == "source:articles" and gate.suite_for("source:notes") == "documents"
    rows = [document_row(e) for e in plain(20)]
    (failed,) = gate.validate("documents", rows).failed  # the replacement: no source in plain text
    assert (failed.expectation, failed.column) == ("expect_column_values_to_not_be_null", "source")
    (failed,) = gate.validate("source:articles", rows).failed
    assert failed.observed == max(len(e.text or "") for e in plain(20))  # what was observed: the longest text
    monitor = StreamMonitor(gate, None, window_records=20)
    closed = None
    for event in plain(20):
        closed = monitor.observe("source:articles", event) or closed
    assert closed is not None
    report = monitor.evaluate(closed).report
    assert report.suite == "source:articles" and not report.success and "quality" in monitor.alerts["source:articles"]


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("bad.json", "{not json", "not a suite"),
    ("bad.json", json.dumps({"expectations": []}), "not a suite"),
    ("bad.json", json.dumps({"name": "source:nobody", "expectations": []}), "names no topic and no configured source"),
    ("bad.json", json.dumps({"name": "documents", "expectations": "all"}), "`expectations` a list"),
])
def test_an_own_suite_that_cannot_be_used_is_refused_by_name(tmp_path: Path, name: str, content: str,
                                                             problem: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(InvalidSuite, match=problem):
        suite_specs(DEFAULTS, tmp_path, {"documents", "queries", "feedback"})
    with pytest.raises(InvalidSuite, match="is not a directory"):
        suite_specs(DEFAULTS, tmp_path / "missing")


def test_an_expectation_gx_does_not_know_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "documents", [{"type": "expect_the_moon", "kwargs": {}}])
    with pytest.raises(InvalidSuite, match=r"documents\.json: ExpectationNotFoundError"):
        QualityGate(own_dir=tmp_path, names={"documents"})


def test_what_gx_observes_always_fits_a_quality_record(tmp_path: Path) -> None:
    write(tmp_path, "documents", [{"type": "expect_column_quantile_values_to_be_between", "kwargs": {
        "column": "text_length", "quantile_ranges": {"quantiles": [0.5, 0.9], "value_ranges": [[1, 2], [1, 2]]}}}])
    gate = QualityGate(own_dir=tmp_path, names={"documents"})
    monitor = StreamMonitor(gate, None, window_records=20)
    closed = None
    for event in plain(20):
        closed = monitor.observe("documents", event) or closed
    assert closed is not None
    report = monitor.evaluate(closed).report  # a nested observation, flattened: a valid record
    (failed,) = report.failed
    assert isinstance(failed.observed, dict) and set(failed.observed) == {"quantiles", "values"}


def test_a_window_of_nothing_but_invalid_records_is_a_quality_failure(gate: QualityGate) -> None:
    monitor = StreamMonitor(gate, None, window_records=5)
    closed = None
    for _ in range(5):
        closed = monitor.observe("source:articles", None) or closed
    assert closed is not None
    report = monitor.evaluate(closed).report
    assert not report.success and report.failed[0].expectation == "every_record_valid"
    assert "quality" in monitor.alerts["source:articles"]
