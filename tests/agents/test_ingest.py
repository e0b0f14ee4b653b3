"""The ingest agent's rules, in process (harness: hashing encoder, in-memory store, no broker)."""

from __future__ import annotations

from pathlib import Path

from schemas import DeadLetter
from streams.devtools.harness import Harness, message
from streams.ml.serving import PairOpener, serving_pair
from streams.settings import Settings
from streams.state.hashing_encoder import HashingEncoder
from streams.state.memory_store import InMemoryVectorStore

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


class PoisonStore(InMemoryVectorStore):
    """Refuses ledger entries of documents named `poison*` (after their chunks were written), as a store refusing
    a payload would."""

    def put_documents(self, states):  # type: ignore[no-untyped-def]
        if any(s.doc_id.startswith("poison") for s in states):
            raise TypeError("unsupported payload value")
        super().put_documents(states)


def poisoned_pairs(settings: Settings) -> PairOpener:
    store = PoisonStore("chunks", 64)
    return lambda model: serving_pair(settings, model, HashingEncoder(model.version, 64), store)


def test_a_record_the_store_refuses_costs_only_itself_and_leaves_no_chunks(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with Harness(tmp_path, opener=poisoned_pairs(settings)).register("ingest") as harness:
        harness.send("documents", [doc("poison-1", 1, "First poisoned text.")])
        harness.send("documents", [doc(f"ok-{i}", 1, f"Good note {i}.") for i in range(3)]
                     + [doc("poison-2", 1, "Second poisoned text."), doc("ok-3", 1, "Good note 3.")])
        store = harness.shared.serving.current.store
        assert set(store.get_documents([f"ok-{i}" for i in range(4)])) == {f"ok-{i}" for i in range(4)}
        assert store.chunks("poison-1") == [] and store.chunks("poison-2") == []  # restored to the ledger: nothing
        letters = harness.published("deadletter")
        assert sorted(letter.key for letter in letters) == ["poison-1", "poison-2"]  # type: ignore[attr-defined]
        assert {letter.exception for letter in letters} == {"TypeError"}  # type: ignore[attr-defined]
        assert harness.shared.health.degraded() == []


def test_metadata_that_cannot_be_stored_is_refused_at_the_gate(tmp_path: Path) -> None:
    with Harness(tmp_path).register("ingest") as harness:
        harness.send("documents", [
            message("documents", b'{"doc_id": "nan", "version": 1, "op": "upsert", "text": "x", "metadata": '
                                 b'{"m": NaN}}', "nan", offset=0),
            message("documents", doc("fine", 1, "A fine note."), "fine", offset=1)])
        (letter,) = harness.published("deadletter")
        assert letter.errors[0].loc == "metadata.m"  # type: ignore[attr-defined]
        assert set(harness.shared.serving.current.store.get_documents(["nan", "fine"])) == {"fine"}
