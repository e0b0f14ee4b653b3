"""Index changes between workers, in process: a write that rewrites or deletes indexed chunks is announced on
`index-changes`; another worker's change drops this worker's cached answers, its own does not."""

from __future__ import annotations

from pathlib import Path

from schemas import IndexChange
from streams.devtools.harness import Harness


def test_rewrites_and_deletes_are_announced_and_other_workers_changes_drop_the_cache(tmp_path: Path) -> None:
    with Harness(tmp_path).register("ingest", "query") as harness:
        harness.send("documents", [{"doc_id": "tea", "version": 1, "op": "upsert", "text": "green tea at 80"},
                                   {"doc_id": "oil", "version": 1, "op": "upsert", "text": "oil the chain"}])
        assert harness.published("index-changes") == []  # new documents replace nothing
        harness.send("documents", [{"doc_id": "tea", "version": 2, "op": "upsert", "text": "black tea at 95"}])
        harness.send("documents", [{"doc_id": "oil", "version": 2, "op": "delete"}])
        changes = harness.published("index-changes")
        assert [c.doc_ids for c in changes] == [["tea"], ["oil"]]  # type: ignore[attr-defined]
        assert {c.worker for c in changes} == {harness.shared.index_changes.worker_id}  # type: ignore[attr-defined]

        searcher = harness.shared.serving.current.searcher
        searcher.search("black tea", 1)
        assert searcher.search("black tea", 1).cached
        own = changes[0]
        assert isinstance(own, IndexChange) and not harness.shared.index_changes.receive(own)
        assert searcher.search("black tea", 1).cached  # its own write invalidated already when it was applied
        other = own.model_copy(update={"worker": "another-worker"})
        assert harness.shared.index_changes.receive(other)
        assert not searcher.search("black tea", 1).cached
