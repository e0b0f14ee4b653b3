"""Which query tokens are identifiers, and how exact matches move first."""

from __future__ import annotations

import pytest

from streams.ml.exact import MAX_IDENTIFIERS, exact_first, identifier_tokens
from streams.state.store import SearchHit


@pytest.mark.parametrize(("query", "tokens"), [
    ("KV-4821-C", ("kv-4821-c",)),
    ("error E4821 after restart", ("e4821",)),
    ("0x8007045D", ("0x8007045d",)),
    ("what raises ERR_TEMP_42?", ("err_temp_42",)),
    ("(parse_config_file) fails", ("parse_config_file",)),
    ("getUserName returns None", ("getusername",)),
    ("json.loads vs json.load", ("json.loads", "json.load")),
    ("IGF-1 and igf-1", ("igf-1",)),
])
def test_identifier_like_tokens_are_found_casefolded_without_repeats(query: str, tokens: tuple[str, ...]) -> None:
    assert identifier_tokens(query) == tokens


@pytest.mark.parametrize("query", [
    "how do I read a file line by line", "Vitamin C and the common cold", "2024 budget", "e.g. a list",
    "What is PCR?", "x", "-", "self-driving cars", "",
])
def test_ordinary_questions_hold_no_identifiers(query: str) -> None:
    assert identifier_tokens(query) == ()


def test_at_most_a_bounded_number_of_identifiers() -> None:
    assert len(identifier_tokens(" ".join(f"E{1000 + i}" for i in range(50)))) == MAX_IDENTIFIERS


def hit(doc_id: str, text: str) -> SearchHit:
    return SearchHit(doc_id, 0, 1.0, text)


def test_exact_matches_move_first_and_ties_keep_the_fused_order() -> None:
    fused = [hit("alike-1", "fitted KV-4821-D today"), hit("alike-2", "fitted KV-4812-C today"),
             hit("exact", "fitted kv-4821-c today"), hit("other", "nothing here"),
             hit("exact-later", "KV-4821-C, again")]
    assert [h.doc_id for h in exact_first(fused, identifier_tokens("KV-4821-C"))] == [
        "exact", "exact-later", "alike-1", "alike-2", "other"]
    assert exact_first(fused, ()) == fused


def test_a_token_is_found_only_whole() -> None:
    fused = [hit("longer", "E48210 and XE4821 and E4821_x"), hit("whole", "(E4821)")]
    assert [h.doc_id for h in exact_first(fused, ("e4821",))] == ["whole", "longer"]
    assert [h.doc_id for h in exact_first([hit("a", "parse_config_files"), hit("b", "call parse_config_file.")],
                                          ("parse_config_file",))] == ["b", "a"]


def test_more_of_the_identifiers_ranks_higher() -> None:
    fused = [hit("one", "E1001 only"), hit("none", "nothing"), hit("both", "E1002 then E1001")]
    assert [h.doc_id for h in exact_first(fused, ("e1001", "e1002"))] == ["both", "one", "none"]
