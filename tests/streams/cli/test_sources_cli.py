"""`gristmill sources check`: one line per problem, the document each sample record becomes, exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.streams.sources.debezium_events import pg_event, row

pytestmark = pytest.mark.integration  # a child process each, as a user runs it

SOURCES = """
sources:
  - name: articles
    topic: dbserver1.public.articles
    format: debezium-json
    doc_id: "article-{id}"
    title: "{title}"
    text: "{body}"
    version: source.lsn
    where: {status: published}
"""


def gristmill(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", "sources", "check", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin",
                                                                "HF_HUB_OFFLINE": "1"})


def test_a_file_and_its_sample_records(tmp_path: Path) -> None:
    (tmp_path / "sources.yaml").write_text(SOURCES)
    sample = tmp_path / "sample.jsonl"
    sample.write_text("\n".join(json.dumps(line) for line in [
        pg_event("c", 100, after=row(1, "Hello", "First body.")),
        {"key": {"id": 1}, "value": None},
        pg_event("u", 101, after=row(2, "Draft", "x", status="draft")),
        pg_event("c", 102, after={"id": 3, "title": "no body", "status": "published"}),
        "not an event",
    ]) + "\n")
    out = gristmill("sources.yaml", "--sample", str(sample), cwd=tmp_path)
    lines = out.stdout.splitlines()
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert lines[0].startswith("sources.yaml: 1 source(s) OK: articles (debezium-json from dbserver1.public.articles)")
    assert lines[1].startswith("line 1: upsert 'article-1' version 100 title 'Hello' text 'First body.'")
    assert lines[2] == "line 2: skipped: tombstone (follows a delete, for log compaction)"
    assert lines[3] == "line 3: delete 'article-2' version 101 (the row leaves the filter)"
    assert lines[4] == "line 4: dead letter: row.body: source articles: text: the row has no field 'body'"
    assert lines[5].startswith("line 5: dead letter: value: source articles: not a Debezium change event")
    assert lines[6] == "5 record(s): 2 mapped, 1 skipped, 2 dead letter(s)"
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps(pg_event("c", 100, after=row(1, "Hello", "First body."))) + "\n")
    assert gristmill("sources.yaml", "--sample", str(clean), cwd=tmp_path).returncode == 0


def test_each_problem_one_line_and_status_2(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(SOURCES.replace('"article-{id}"', '"article"').replace("debezium-json", "x"))
    out = gristmill("bad.yaml", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stdout.splitlines() == [  # the format first: what the rest means depends on it
        "invalid: bad.yaml: sources.0.format: Input should be 'debezium-json', 'json', 'avro' or 'json-schema'"]
    (tmp_path / "two.yaml").write_text(SOURCES.replace('"{body}"', '"{body"') + SOURCES.split("sources:")[1]
                                       .replace("name: articles", "name: Notes!"))
    out = gristmill("two.yaml", cwd=tmp_path)
    assert out.returncode == 2 and out.stdout.splitlines() == [  # every problem, one line each
        "invalid: two.yaml: sources.0.text: Value error, template '{body': expected '}' before end of string",
        "invalid: two.yaml: sources.1.name: String should match pattern '^[a-z0-9][a-z0-9_\\-]{0,62}$'"], out.stdout
    (tmp_path / "sources.yaml").write_text(SOURCES)
    for args, expected in ((["--sample", "missing.jsonl"], "invalid sample: cannot read missing.jsonl"),
                           (["--sample", "missing.jsonl", "--from", "t"], "give --sample or --from, not both"),
                           (["--sample", "x", "--source", "nope"], "no source named 'nope'")):
        out = gristmill("sources.yaml", *args, cwd=tmp_path)
        assert out.returncode == 2 and expected in out.stdout and "Traceback" not in out.stderr, out.stdout
