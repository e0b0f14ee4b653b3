"""The exact-identifier set: each identifier in exactly one note, look-alikes everywhere else."""

from __future__ import annotations

import json
from pathlib import Path

from streams.devtools.beir import load_beir
from streams.devtools.identifier_set import LOOK_ALIKES, TARGETS, write_identifier_set
from streams.ml.exact import identifier_tokens


def words(text: str) -> set[str]:
    """The note's words and codes, punctuation around them dropped, ignoring case."""
    return {word.strip(".,;:()").casefold() for word in text.split()}


def test_each_identifier_is_held_by_its_one_relevant_note(tmp_path: Path) -> None:
    assert write_identifier_set(tmp_path) == (200, 40)
    dataset = load_beir(tmp_path)
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "queries.jsonl").read_text().splitlines()]
    assert {kind: kinds.count(kind) for kind in TARGETS} == TARGETS
    for query, text in dataset.queries.items():
        assert identifier_tokens(text) == (text,)  # the query is one identifier, seen as one
        holders = {doc for doc, (_, body) in dataset.corpus.items() if text.casefold() in words(body)}
        assert holders == set(dataset.qrels[query]), text
        stem = next(iter(holders)).rsplit("-", 1)[0]
        look_alikes = [body for doc, (_, body) in dataset.corpus.items() if doc.startswith(stem) and doc not in holders]
        assert len(look_alikes) == LOOK_ALIKES


def test_a_seed_makes_one_set(tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_identifier_set(tmp_path / name, seed)
    same = [(tmp_path / n / "queries.jsonl").read_text() for n in "abc"]
    assert same[0] == same[1] != same[2]
    assert (tmp_path / "a" / "corpus.jsonl").read_text() == (tmp_path / "b" / "corpus.jsonl").read_text()
