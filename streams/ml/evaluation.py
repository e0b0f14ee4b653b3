"""Online metrics from the evaluation store: per (version, arm, slice, window) counts, positive rate, MRR@10,
nDCG@10 and latency; shadow agreement with serving; comparisons of two arms with confidence intervals.

A query is *judged* when feedback judged (non-neutrally) one of the documents it was served. Its relevant
documents are those judged positive. For an arm that served it: positive means one of them is in its top 10,
MRR@10 and nDCG@10 rank its served documents against them. A shadow's answer was never seen, so it is scored
against the judgements of the serving answer to the same query: an estimate that counts a document only the
shadow ranked as not relevant (an "offline-on-live" estimate, biased toward the serving ranking).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, kendalltau

from streams.state.evaluation_store import AnswerRecord

K = 10
SLICE_KEYS = ("length", "source", "segment")
GROUP_KEYS = ("version", "arm", "slice", "window", "experiment")


def length_bucket(text: str) -> str:
    """The query's length slice: `short` (1-2 words), `medium` (3-6), `long` (7 or more)."""
    words = len(text.split())
    return "short" if words <= 2 else ("medium" if words <= 6 else "long")


@dataclass(frozen=True)
class Scored:
    """One answer scored against the judgements of its query (`judged` False: no judgement on what it showed)."""

    answer: AnswerRecord
    judged: bool
    positive: float
    reciprocal_rank: float
    ndcg: float


def score(answer: AnswerRecord, judgements: Mapping[str, int], k: int = K) -> Scored:
    relevant = {doc for doc, judgement in judgements.items() if judgement > 0}
    top = answer.doc_ids[:k]
    if answer.arm == "shadow":
        judged = any(j != 0 for j in judgements.values())
    else:
        judged = any(judgements.get(doc, 0) != 0 for doc in top)
    ranks = [i for i, doc in enumerate(top) if doc in relevant]
    dcg = sum(1 / math.log2(i + 2) for i in ranks)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return Scored(answer, judged, float(bool(ranks)), 1 / (ranks[0] + 1) if ranks else 0.0,
                  dcg / ideal if ideal else 0.0)


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if trials == 0:
        return (0.0, 1.0)
    ci = binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    return (float(ci.low), float(ci.high))


def bootstrap_difference(candidate: Sequence[float], serving: Sequence[float], paired: bool = False,
                         resamples: int = 2_000, seed: int = 7) -> tuple[float, float, float]:
    """Mean of `candidate` minus mean of `serving` with a 95% percentile bootstrap interval (paired: the two
    sequences are the same queries, resampled together)."""
    a, b = np.asarray(candidate, dtype=float), np.asarray(serving, dtype=float)
    if not len(a) or not len(b):
        return (0.0, -math.inf, math.inf)
    rng = np.random.default_rng(seed)
    if paired:
        d = a - b
        means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
        diff = float(d.mean())
    else:
        means = (a[rng.integers(0, len(a), (resamples, len(a)))].mean(axis=1)
                 - b[rng.integers(0, len(b), (resamples, len(b)))].mean(axis=1))
        diff = float(a.mean() - b.mean())
    return (diff, float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def agreement(shadow: Sequence[str], serving: Sequence[str], k: int = K) -> tuple[float, float | None]:
    """overlap@k of two rankings, and Kendall's tau over the documents both ranked in their top k (None when
    fewer than two are shared)."""
    a, b = list(shadow[:k]), list(serving[:k])
    shared = [doc for doc in a if doc in b]
    overlap = len(shared) / max(1, min(k, max(len(a), len(b))))
    if len(shared) < 2:
        return overlap, None
    tau = kendalltau([a.index(d) for d in shared], [b.index(d) for d in shared]).statistic
    return overlap, None if math.isnan(tau) else float(tau)


def slice_of(answer: AnswerRecord, key: str) -> str:
    value = {"length": answer.length, "source": answer.source, "segment": answer.segment}[key]
    return f"{key}={value or '-'}"


def summarize(answers: Sequence[AnswerRecord], judgements: Mapping[str, Mapping[str, int]],
              by: Sequence[str] = ("version", "arm"), slices: Sequence[str] = SLICE_KEYS,
              window_s: float | None = None) -> list[dict[str, object]]:
    """Metrics per group: `by` picks among version, arm, slice (each answer counts once per slice key in
    `slices`), window (`window_s` buckets of answered_at) and experiment."""
    served = {a.query_id: a for a in answers if a.arm != "shadow"}
    groups: dict[tuple[str, ...], list[Scored]] = defaultdict(list)
    agreements: dict[tuple[str, ...], list[tuple[float, float | None]]] = defaultdict(list)
    for answer in answers:
        scored = score(answer, judgements.get(answer.query_id, {}))
        for slice_name in ([slice_of(answer, key) for key in slices] if "slice" in by else ["all"]):
            fields = {"version": answer.model_version, "arm": answer.arm, "slice": slice_name,
                      "experiment": answer.experiment or "-",
                      "window": str(int(answer.answered_at // window_s * window_s)) if window_s else "all"}
            key = tuple(fields[name] for name in by)
            groups[key].append(scored)
            if answer.arm == "shadow" and answer.query_id in served:
                agreements[key].append(agreement(answer.doc_ids, served[answer.query_id].doc_ids))
    rows = []
    for key, scored_answers in sorted(groups.items()):
        judged = [s for s in scored_answers if s.judged]
        positives = int(sum(s.positive for s in judged))
        latencies = [s.answer.latency_ms for s in scored_answers]
        row: dict[str, object] = dict(zip(by, key, strict=True))
        row |= {"queries": len(scored_answers), "judged": len(judged),
                "positive_rate": positives / len(judged) if judged else None,
                "positive_rate_ci": wilson(positives, len(judged)) if judged else None,
                "mrr@10": float(np.mean([s.reciprocal_rank for s in judged])) if judged else None,
                "ndcg@10": float(np.mean([s.ndcg for s in judged])) if judged else None,
                "latency_p50_ms": percentile(latencies, 50), "latency_p99_ms": percentile(latencies, 99)}
        if key in agreements:
            pairs = agreements[key]
            taus = [tau for _, tau in pairs if tau is not None]
            row |= {"overlap@10": float(np.mean([o for o, _ in pairs])),
                    "rank_correlation": float(np.mean(taus)) if taus else None}
        rows.append(row)
    return rows


METRICS = {"positive_rate": "positive", "mrr@10": "reciprocal_rank", "ndcg@10": "ndcg"}


@dataclass(frozen=True)
class Comparison:
    """The candidate against serving on one metric: difference with its 95% interval, judged queries per arm,
    and after how many judged queries (in arrival order) the interval first excluded zero."""

    metric: str
    candidate: float | None
    serving: float | None
    difference: float
    low: float
    high: float
    judged_candidate: int
    judged_serving: int
    needed: int | None

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def first_significant(candidate: Sequence[tuple[float, float]], serving: Sequence[tuple[float, float]],
                      paired: bool, step: int = 10) -> int | None:
    """Judged queries (both arms together, by time) from which on a normal-approximation 95% interval of the
    difference excluded zero to the end (None: it does not at the end); checked every `step` queries from 20 per
    arm, so a chance crossing early on that does not last is not counted."""
    events = sorted([(t, 0, v) for t, v in candidate] + [(t, 1, v) for t, v in serving])
    a: list[float] = []
    b: list[float] = []
    since: int | None = None
    for n, (_, arm, value) in enumerate(events, start=1):
        (a if arm == 0 else b).append(value)
        if n % step or len(a) < 20 or len(b) < 20:
            continue
        if paired:
            m = min(len(a), len(b))
            d = np.asarray(a[:m]) - np.asarray(b[:m])
            mean, se = d.mean(), d.std(ddof=1) / math.sqrt(m)
        else:
            mean = np.mean(a) - np.mean(b)
            se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
        significant = se > 0 and abs(mean) > 1.96 * se
        since = (since or n) if significant else None
    return since


def compare(answers: Sequence[AnswerRecord], judgements: Mapping[str, Mapping[str, int]], candidate_arm: str,
            metric: str = "positive_rate") -> Comparison:
    """The candidate's arm (`candidate` of a split, or `shadow`, paired with serving on the same queries)
    against the serving arm, on `metric`, over judged queries."""
    attribute = METRICS[metric]
    scored = [score(a, judgements.get(a.query_id, {})) for a in answers]
    serving = {s.answer.query_id: s for s in scored if s.answer.arm == "serving" and s.judged}
    mine = {s.answer.query_id: s for s in scored if s.answer.arm == candidate_arm and s.judged}
    paired = candidate_arm == "shadow"
    if paired:
        shared = [q for q in mine if q in serving]
        mine, serving = {q: mine[q] for q in shared}, {q: serving[q] for q in shared}
    a = [getattr(s, attribute) for s in mine.values()]
    b = [getattr(s, attribute) for s in serving.values()]
    diff, low, high = bootstrap_difference(a, b, paired=paired)
    needed = first_significant([(s.answer.answered_at, getattr(s, attribute)) for s in mine.values()],
                               [(s.answer.answered_at, getattr(s, attribute)) for s in serving.values()], paired)
    return Comparison(metric, float(np.mean(a)) if a else None, float(np.mean(b)) if b else None, diff, low, high,
                      len(a), len(b), needed)


@dataclass(frozen=True)
class Preference:
    """Team-draft interleaving outcome: per judged query, the ranker whose contributed documents got more
    positive judgements wins. `preference` is the candidate's share of the decided queries (ties left out) minus
    0.5, with its 95% Wilson interval and the sign test's p-value."""

    candidate_wins: int
    serving_wins: int
    ties: int
    preference: float
    low: float
    high: float
    p_value: float
    needed: int | None

    @property
    def judged(self) -> int:
        return self.candidate_wins + self.serving_wins + self.ties

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "judged": self.judged}


def interleaving_preference(answers: Iterable[AnswerRecord], judgements: Mapping[str, Mapping[str, int]]
                            ) -> Preference:
    outcomes: list[int] = []  # +1 candidate, -1 serving, 0 tie, in arrival order
    for answer in sorted((a for a in answers if a.arm == "interleave" and a.credits), key=lambda a: a.answered_at):
        judged = judgements.get(answer.query_id, {})
        if not any(judged.get(doc, 0) != 0 for doc in answer.doc_ids[:K]):
            continue
        credits = answer.credits or {}
        wins = {"candidate": 0, "serving": 0}
        for doc in answer.doc_ids[:K]:
            if judged.get(doc, 0) > 0 and doc in credits:
                wins[credits[doc]] += 1
        outcomes.append((wins["candidate"] > wins["serving"]) - (wins["candidate"] < wins["serving"]))
    c, s = outcomes.count(1), outcomes.count(-1)
    ties = len(outcomes) - c - s
    share = c / (c + s) if c + s else 0.5
    low, high = wilson(c, c + s) if c + s else (0.0, 1.0)
    p_value = float(binomtest(c, c + s).pvalue) if c + s else 1.0
    needed = None  # judged queries from which on the sign test stayed significant (as in `first_significant`)
    for n in range(20, len(outcomes) + 1, 10):
        head = outcomes[:n]
        hc, hs = head.count(1), head.count(-1)
        significant = bool(hc + hs) and binomtest(hc, hc + hs).pvalue < 0.05
        needed = (needed or n) if significant else None
    return Preference(c, s, ties, share - 0.5, low - 0.5, high - 0.5, p_value, needed)
