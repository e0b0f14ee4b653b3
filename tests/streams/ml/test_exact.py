"""Which query tokens are identifiers, and how exact matches move first."""

from __future__ import annotations

import pytest

from streams.ml.exact import MAX_IDENTIFIERS, RARE_SHARE, exact_first, identifier_tokens
from streams.state.store import SearchHit


@pytest.mark.parametrize(("query", "tokens"), [
    ("KV-4821-C", ("KV-4821-C",)),
    ("error E4821 after restart", ("E4821",)),
    ("0x8007045D", ("0x8007045D",)),
    ("what raises ERR_TEMP_42?", ("ERR_TEMP_42",)),
    ("(parse_config_file) fails", ("parse_config_file",)),
    ("getUserName returns None", ("getUserName",)),
    ("json.loads vs json.load", ("json.loads", "json.load")),
    ("IGF-1 and igf-1", ("IGF-1",)),
    ("E4821's cause, then #E4822 and E4823/E4824-", ("E4821", "E4822", "E4823", "E4824")),
])
def test_identifier_like_tokens_are_found_once_as_written(query: str, tokens: tuple[str, ...]) -> None:
    assert identifier_tokens(query) == tokens


@pytest.mark.parametrize("query", [
    "how do I read a file line by line", "Vitamin C and the common cold", "2024 budget", "e.g. a list",
    "What is PCR?", "x", "-", "self-driving cars", "", "Stool pH and mRNA", "take 5mg on the 2nd day at 10:30am",
    "a 4K screen", "__init__",
])
def test_ordinary_questions_hold_no_identifiers(query: str) -> None:
    assert identifier_tokens(query) == ()


def test_at_most_a_bounded_number_of_identifiers_and_no_slow_patterns() -> None:
    assert len(identifier_tokens(" ".join(f"E{1000 + i}" for i in range(50)))) == MAX_IDENTIFIERS
    assert identifier_tokens("a_" * 20_000 + "!") == ()  # answered at once: no backtracking blow-up


def hit(doc_id: str, text: str) -> SearchHit:
    return SearchHit(doc_id, 0, 1.0, text)


def test_exact_matches_move_first_and_ties_keep_the_fused_order() -> None:
    fused = [hit("alike-1", "fitted KV-4821-D today"), hit("alike-2", "fitted KV-4812-C today"),
             hit("exact", "fitted kv-4821-c today."), hit("other", "nothing here"),
             hit("exact-later", "KV-4821-C, again")]
    assert [h.doc_id for h in exact_first(fused, identifier_tokens("KV-4821-C"), 100)] == [
        "exact", "exact-later", "alike-1", "alike-2", "other"]
    assert exact_first(fused, (), 100) == fused


@pytest.mark.parametrize("text", ["E48210", "XE4821", "X-E4821", "E4821-B", "E4821_x", "ref.E4821", "E4821.5"])
def test_a_token_is_found_only_whole(text: str) -> None:
    fused = [hit("longer", text), hit("whole", "logged (E4821).")]
    assert [h.doc_id for h in exact_first(fused, ("E4821",), 100)] == ["whole", "longer"]


def test_a_longer_identifier_is_not_taken_for_a_shorter_one() -> None:
    fused = [hit("plural", "parse_config_files"), hit("exact", "call parse_config_file."),
             hit("both", "json.loads then json.load")]
    assert [h.doc_id for h in exact_first(fused, ("parse_config_file",), 100)] == ["exact", "plural", "both"]
    assert exact_first(fused[::-1], ("json.load", "json.loads"), 100)[0].doc_id == "both"


def test_more_of_the_identifiers_ranks_higher() -> None:
    fused = [hit("one", "E1001 only"), hit("none", "nothing"), hit("both", "E1002 then E1001")]
    assert [h.doc_id for h in exact_first(fused, ("E1001", "E1002"), 100)] == ["both", "one", "none"]


def test_a_token_many_candidates_hold_is_not_rare_and_decides_nothing() -> None:
    window = 20
    common = int(RARE_SHARE * window) + 1
    fused = [hit(f"b12-{i}", "vitamin B12 levels") for i in range(common)] + [hit("plain", "diet")]
    fused = [fused[-1], *fused[:-1], hit("rare", "E7001 and B12")]
    assert exact_first(fused, ("B12",), window) == fused  # held by too many: fused order
    assert exact_first(fused, ("B12", "E7001"), window)[0].doc_id == "rare"  # the rare one still decides


def test_only_the_window_is_reordered() -> None:
    fused = [hit(f"other-{i}", "nothing") for i in range(5)] + [hit("exact", "E4821")]
    assert exact_first(fused, ("E4821",), 5) == fused
    assert exact_first(fused, ("E4821",), 6)[0].doc_id == "exact"
