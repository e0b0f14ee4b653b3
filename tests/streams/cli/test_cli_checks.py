"""The CLI checks what it would send as the worker will, before it sends anything: a search's text and top_k, a
document version, the evaluation's options; a refusal is one line and exit status 2 (no wait, no dead letter)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams import cli

runner = CliRunner()


@pytest.mark.parametrize("args", [
    ["ask", ""], ["ask", "   "], ["ask", "x", "-k", "0"], ["ask", "x", "-k", "1001"], ["search", "x", "-k", "0"],
    ["search", ""], ["eval", "missing-dir", "--top-k", "0"], ["eval", "missing-dir", "--top-k", "1001"],
    ["produce", "documents", "missing-dir", "--version", "-1"],
    ["evaluation", "--window", "nan"], ["evaluation", "--window", "inf"], ["evaluation", "--window", "1e-300"],
    ["evaluation", "--since", "inf"], ["evaluation", "--since", "1e400"],
    ["evaluation", "--by", "slice", "--slices", "length,length"],
])
def test_what_the_worker_would_refuse_is_refused_before_it_is_sent(args: list[str], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRISTMILL_DATA_DIR", str(tmp_path))  # no stack, no broker: nothing could be sent anyway
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("invalid ") and len(result.output.strip().splitlines()) == 1, result.output
