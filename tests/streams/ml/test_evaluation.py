"""Online metrics from answers and judgements: per arm and slice, shadow agreement, intervals, interleaving."""

import pytest

from streams.ml.evaluation import (
    agreement,
    bootstrap_difference,
    compare,
    interleaving_preference,
    length_bucket,
    summarize,
    wilson,
)
from streams.state.evaluation_store import AnswerRecord


def row(query_id: str, arm: str, docs: list[str], *, version: str = "v1", length: str = "short", at: float = 0.0,
        latency: float = 10.0, credits: dict[str, str] | None = None, segment: str = "") -> AnswerRecord:
    return AnswerRecord(query_id, arm, version, version, latency, docs, at, length, "src", segment, "e1", "",
                        credits)


def test_length_buckets() -> None:
    assert [length_bucket(t) for t in ("json", "read a file", "how do I read a file line by line")] == [
        "short", "medium", "long"]


def test_metrics_per_arm_and_slice_over_judged_queries_only() -> None:
    answers = [row("q1", "serving", ["a", "b", "c"]), row("q2", "serving", ["d", "e"], length="long"),
               row("q3", "serving", ["f"]), row("q1", "shadow", ["b", "a", "x"], version="v2")]
    judgements = {"q1": {"b": 1}, "q2": {"d": -1}}  # q3 was never judged
    rows = {(r["arm"], r["slice"]): r for r in summarize(answers, judgements, ("arm", "slice"), ("length",))}
    short = rows[("serving", "length=short")]
    assert (short["queries"], short["judged"], short["positive_rate"], short["mrr@10"]) == (2, 1, 1.0, 0.5)
    assert short["ndcg@10"] == pytest.approx(1 / 1.5849625, abs=1e-6)  # relevant doc at rank 2
    long_ = rows[("serving", "length=long")]
    assert (long_["judged"], long_["positive_rate"], long_["mrr@10"]) == (1, 0.0, 0.0)
    shadow = rows[("shadow", "length=short")]
    assert (shadow["mrr@10"], shadow["overlap@10"]) == (1.0, pytest.approx(2 / 3))  # judged via serving's answer
    assert shadow["rank_correlation"] == pytest.approx(-1.0)  # a and b swapped


def test_agreement_and_intervals() -> None:
    assert agreement(["a", "b", "c"], ["a", "b", "c"]) == (1.0, 1.0)
    assert agreement(["a", "x"], ["a", "y"]) == (0.5, None)
    low, high = wilson(50, 100)
    assert low < 0.5 < high and high - low < 0.2
    assert wilson(0, 0) == (0.0, 1.0)
    diff, low, high = bootstrap_difference([1.0] * 50 + [0.0] * 50, [1.0] * 20 + [0.0] * 80)
    assert diff == pytest.approx(0.3) and 0 < low < 0.3 < high
    diff, low, high = bootstrap_difference([1, 0, 1, 0], [1, 0, 1, 0], paired=True)
    assert (diff, low, high) == (0.0, 0.0, 0.0)


def test_split_comparison_finds_the_better_arm_and_when() -> None:
    answers, judgements = [], {}
    for i in range(200):
        arm = "candidate" if i % 2 else "serving"
        answers.append(row(f"q{i}", arm, ["good", "bad"] if arm == "candidate" or i % 4 == 0 else ["bad", "good"],
                           at=float(i)))
        judgements[f"q{i}"] = {"good": 1}
    result = compare(answers, judgements, "candidate", "mrr@10")
    assert (result.candidate, result.serving) == (1.0, 0.75)
    assert result.low > 0 and result.judged_candidate == result.judged_serving == 100
    assert result.needed is not None and result.needed <= 200


def test_interleaving_credits_positive_judgements_to_the_team_that_contributed() -> None:
    answers, judgements = [], {}
    for i in range(60):
        answers.append(row(f"q{i}", "interleave", ["c1", "s1"], credits={"c1": "candidate", "s1": "serving"},
                           at=float(i)))
        judgements[f"q{i}"] = {"c1": 1} if i % 6 else {"s1": 1}  # five of six prefer the candidate's hit
    preference = interleaving_preference(answers, judgements)
    assert (preference.candidate_wins, preference.serving_wins, preference.ties) == (50, 10, 0)
    assert preference.preference == pytest.approx(50 / 60 - 0.5) and preference.low > 0
    assert preference.needed is not None and preference.needed <= 60
