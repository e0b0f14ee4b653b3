"""The ingest agent's rules, in process (harness: hashing encoder, in-memory store, no broker)."""

from __future__ import annotations

from pathlib import Path

from schemas import DeadLetter
from streams.devtools.harness import Harness, message

LONG = " ".join(f"Paragraph {i} says offsets are committed only after the index write." for i in range(20))


def doc(doc_id: str, version: int, text: str | None = None, op: str = "upsert") -> dict[str, object]:
    return {"doc_id": doc_id, "version": version, "op": op, **({"text": text} if text is not None else {})}


def test_versions_deletes_and_shrinking_documents_end_as_the_rules_say(tmp_path: Path) -> None:
    with Harness(tmp_path, chunk_tokens=16, chunk_overlap=4).register("ingest") as harness:
        harness.send("documents", [doc("grow", 1, "Tiny."), doc("shrink", 1, LONG), doc("gone", 1, LONG)])
        harness.send("documents", [doc("grow", 2, LONG), doc("shrink", 2, "Short now."), doc("gone", 2, op="delete"),
                                   doc("grow", 1, "A late, older version.")])
        store = harness.shared.serving.current.store
        ledger = store.get_documents(["grow", "shrink", "gone"])
        assert {d: (s.version, s.deleted) for d, s in ledger.items()} == {
            "grow": (2, False), "shrink": (2, False), "gone": (2, True)}
        assert [c.text for c in store.chunks("shrink")] == ["Short now."]
        assert len(store.chunks("grow")) > 3 and store.chunks("gone") == []
        assert harness.published("deadletter") == []


def test_a_bad_record_is_dead_lettered_and_its_neighbours_applied(tmp_path: Path) -> None:
    with Harness(tmp_path).register("ingest") as harness:
        harness.send("documents", [
            message("documents", doc("before", 1, "Applied before the bad one."), "before", offset=0),
            message("documents", b'{"doc_id": "bad", "version": "1", "op": "upsert", "text": "x"}', "bad", offset=1),
            message("documents", doc("after", 1, "Applied after the bad one."), "after", offset=2),
        ])
        (letter,) = harness.published("deadletter")
        assert isinstance(letter, DeadLetter) and letter.offset == 1 and letter.errors[0].loc == "version"
        assert set(harness.shared.serving.current.store.get_documents(["before", "after", "bad"])) == {"before",
                                                                                                      "after"}
