"""Reading BEIR-format folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.devtools.beir import load_beir


def test_load_beir_keeps_only_judged_queries(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": "body"}) + "\n")
    (tmp_path / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "find body"}) + "\n" + json.dumps({"_id": "q2", "text": "unjudged"}) + "\n")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    dataset = load_beir(tmp_path)
    assert dataset.corpus == {"d1": ("T", "body")} and dataset.queries == {"q1": "find body"}
    assert dataset.qrels == {"q1": {"d1": 1}}
    with pytest.raises(FileNotFoundError, match="BEIR"):
        load_beir(tmp_path / "qrels")
