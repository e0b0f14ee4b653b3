"""Reading documents to produce: folders, symlinks, encodings and sizes (no broker needed)."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.records import MAX_TEXT_CHARS
from streams.produce import DocumentSource


def test_a_folder_sends_its_own_utf8_text_files_and_says_what_it_skipped(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("root:x:0:0\n")
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "a.md").write_text("# Title A\nbody a\n")
    (notes / "sub" / "b.txt").write_text("body b\n")
    (notes / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (notes / "huge.txt").write_text("x" * (MAX_TEXT_CHARS + 1))
    (notes / "link.txt").symlink_to(outside)
    (notes / "inside-link.txt").symlink_to(notes / "a.md")
    source = DocumentSource(notes, version=7)
    sent = {r.key.decode(): json.loads(r.value) for r in source.records()}  # type: ignore[union-attr]
    assert sorted(sent) == ["a.md", "inside-link.txt", "sub/b.txt"]
    assert sent["a.md"]["title"] == "Title A" and sent["sub/b.txt"]["version"] == 7
    reasons = {Path(s.what).name: s.reason for s in source.skipped}
    assert set(reasons) == {"latin1.txt", "huge.txt", "link.txt"}
    assert "not UTF-8" in reasons["latin1.txt"] and "200,000" in reasons["huge.txt"]
    assert "--follow-symlinks" in reasons["link.txt"]
    followed = DocumentSource(notes, version=7, follow_symlinks=True)
    assert "link.txt" in {r.key.decode() for r in followed.records()}  # type: ignore[union-attr]
