"""Live experiments of a candidate version against the serving one: who sees what (shadow, split, interleave),
the answers each arm gives, and the guarded decision that ends an experiment.

* shadow: a fraction of queries (by query_id) is also answered by the candidate, after the served answer went
  out, off the served path; nobody sees the shadow's answer.
* split: a fraction of users (by user_id, else query_id) is answered by the candidate alone.
* interleave: a fraction of queries gets one list drafted from both rankings (team draft); each hit is credited
  to the ranker that contributed it.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from schemas import ExperimentSpec, ModelUpdate
from streams.ml.evaluation import compare, interleaving_preference, length_bucket, summarize
from streams.ml.search import SearchRequest, SearchResult
from streams.ml.serving import Serving, ServingSlot
from streams.settings import Settings
from streams.state.errors import CandidateServes, ExperimentConflict, NoExperiment
from streams.state.evaluation_store import LIVE_STATES, AnswerRecord, EvaluationStore, ExperimentRecord
from streams.state.registry import ModelRegistry
from streams.state.store import SearchHit

Team = Literal["serving", "candidate"]


def exposed(key: str, fraction: float, salt: str) -> bool:
    """Deterministic: the same key in the same experiment always lands on the same side."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def team_draft(serving: Sequence[SearchHit], candidate: Sequence[SearchHit], limit: int, seed: str,
               by_document: bool) -> tuple[list[SearchHit], dict[str, Team]]:
    """Team-draft interleaving (Radlinski et al., 2008): the team with fewer picks (a coin decides ties) adds its
    best hit not yet in the list. While both rankings agree on the next hit it is added without a team (a click
    on it says nothing about which ranker is better), so credits go only to hits that tell the rankers apart.
    Returns the list and which team contributed each credited document."""
    def key(hit: SearchHit) -> tuple[str, int]:
        return (hit.doc_id, 0 if by_document else hit.chunk)

    teams: dict[Team, list[SearchHit]] = {"serving": list(serving), "candidate": list(candidate)}
    picks = {"serving": 0, "candidate": 0}
    merged: list[SearchHit] = []
    taken: set[tuple[str, int]] = set()
    credits: dict[str, Team] = {}
    while len(merged) < limit:
        for team in teams.values():  # drop hits already in the list
            while team and key(team[0]) in taken:
                team.pop(0)
        if not teams["serving"] and not teams["candidate"]:
            break
        if teams["serving"] and teams["candidate"] and key(teams["serving"][0]) == key(teams["candidate"][0]):
            hit = teams["serving"].pop(0)  # both would pick it: shared, credited to neither
            merged.append(hit)
            taken.add(key(hit))
            continue
        coin = hashlib.sha256(f"{seed}\x00{len(merged)}".encode()).digest()[0] & 1
        first: Team = "candidate" if picks["candidate"] < picks["serving"] or (
            picks["candidate"] == picks["serving"] and coin) else "serving"
        team_name: Team = first if teams[first] else ("serving" if first == "candidate" else "candidate")
        hit = teams[team_name].pop(0)
        merged.append(hit)
        taken.add(key(hit))
        credits.setdefault(hit.doc_id, team_name)
        picks[team_name] += 1
    return merged, credits


@dataclass(frozen=True)
class RoutedQuery:
    query_id: str
    request: SearchRequest
    user_id: str | None = None
    segment: str | None = None


@dataclass(frozen=True)
class Answer:
    """What the client gets for one query, and which arm of which experiment gave it."""

    query: RoutedQuery
    result: SearchResult
    arm: str = "serving"
    experiment: str | None = None
    credits: dict[str, Team] | None = None


def live(experiment: ExperimentRecord | None, challenger: Serving | None) -> bool:
    """A running experiment whose challenger this worker has at hand."""
    return experiment is not None and experiment.state == "running" and challenger is not None \
        and challenger.model.version == experiment.version


def arm_of(query: RoutedQuery, experiment: ExperimentRecord | None, challenger: Serving | None) -> str:
    """The arm that answers `query`: serving unless a running experiment with its challenger at hand takes it."""
    if not live(experiment, challenger):
        return "serving"
    assert experiment is not None
    if experiment.mode == "split":
        return "candidate" if exposed(query.user_id or query.query_id, experiment.fraction, experiment.id) \
            else "serving"
    if exposed(query.query_id, experiment.fraction, experiment.id):
        return "shadow" if experiment.mode == "shadow" else "interleave"
    return "serving"


def answer(queries: Sequence[RoutedQuery], serving: Serving, challenger: Serving | None,
           experiment: ExperimentRecord | None) -> tuple[list[Answer], list[RoutedQuery]]:
    """Answer a batch as the experiment routes it (each searcher embeds its share in one call); returns the
    answers in order and the queries the shadow should answer later, off the served path."""
    arms = [arm_of(q, experiment, challenger) for q in queries]
    on_serving = [i for i, arm in enumerate(arms) if arm != "candidate"]
    on_candidate = [i for i, arm in enumerate(arms) if arm in ("candidate", "interleave")]
    served = dict(zip(on_serving, serving.searcher.search_many([queries[i].request for i in on_serving]),
                      strict=True))
    candidate: dict[int, SearchResult] = {}
    if on_candidate and challenger is not None:
        candidate = dict(zip(on_candidate, challenger.searcher.search_many([queries[i].request
                                                                              for i in on_candidate]), strict=True))
    answers = []
    experiment_id = experiment.id if experiment is not None and live(experiment, challenger) else None
    for i, (query, arm) in enumerate(zip(queries, arms, strict=True)):
        if arm == "candidate":
            answers.append(Answer(query, candidate[i], "candidate", experiment_id))
        elif arm == "interleave":
            hits, credits = team_draft(served[i].hits, candidate[i].hits, query.request.limit, query.query_id,
                                       query.request.group == "doc")
            result = replace(served[i], hits=hits, latency_ms=max(served[i].latency_ms, candidate[i].latency_ms),
                             cached=served[i].cached and candidate[i].cached)
            answers.append(Answer(query, result, "interleave", experiment_id, credits))
        else:
            answers.append(Answer(query, served[i], "serving", experiment_id))  # the experiment's control
    return answers, [q for q, arm in zip(queries, arms, strict=True) if arm == "shadow"]


def served_documents(hits: Sequence[SearchHit]) -> list[str]:
    return list(dict.fromkeys(hit.doc_id for hit in hits))


def answer_record(query: RoutedQuery, result: SearchResult, arm: str, experiment: str | None,
                  credits: Mapping[str, Team] | None, latency_ms: float, answered_at: float) -> AnswerRecord:
    """The evaluation store's row of one arm's answer, with its slice keys."""
    return AnswerRecord(query.query_id, arm, result.model_version, result.index_version, latency_ms,
                        served_documents(result.hits), answered_at, length_bucket(query.request.text),
                        (result.hits[0].source or "") if result.hits else "", query.segment or "", experiment or "",
                        query.user_id or "", dict(credits) if credits is not None else None, result.cached)


# decisions

Action = Literal["promote", "stop", "rollback", "finish"]


@dataclass(frozen=True)
class Guardrails:
    metric: str = "mrr@10"
    margin: float = 0.0
    min_judged: int = 100
    positive_rate_drop: float = 0.05
    latency_ratio: float = 2.0
    min_latency_queries: int = 50
    watch_s: float = 3600.0

    @classmethod
    def of(cls, settings: Settings) -> Guardrails:
        return cls(settings.experiment_metric, settings.experiment_margin, settings.experiment_min_judged,
                   settings.experiment_guardrail_positive_rate, settings.experiment_guardrail_latency_ratio,
                   watch_s=settings.experiment_watch_s)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    evidence: dict[str, float]


def finite(values: Mapping[str, float | int | None]) -> dict[str, float]:
    """Evidence as finite numbers (what a `model-updates` record carries)."""
    return {k: round(float(v), 6) for k, v in values.items() if v is not None and math.isfinite(float(v))}


def p99(answers: Sequence[AnswerRecord], arm: str) -> tuple[float | None, int]:
    """Latency p99 of an arm's answers that were computed (a cache hit costs nothing of the model), and their
    count."""
    latencies = [a.latency_ms for a in answers if a.arm == arm and not a.cached]
    return (float(np.percentile(latencies, 99)) if latencies else None), len(latencies)


def decide(experiment: ExperimentRecord, answers: Sequence[AnswerRecord],
           judgements: Mapping[str, Mapping[str, int]], rails: Guardrails, now: float | None = None
           ) -> tuple[Decision | None, dict[str, float]]:
    """The decision a running (or promoted and watched) experiment has reached, if any, and the evidence so far.

    Running: after `min_judged` judged queries per arm, stop when the candidate's positive rate fell by more than
    its bound, its latency p99 grew beyond its ratio (split only: a shadow runs at low priority on one thread and
    interleave runs both searches, so neither latency says what the candidate would cost), or it is worse on the
    metric (the 95% interval below zero);
    promote when it beats serving on the metric by the margin with the interval's low end above zero. Interleave
    decides on the preference instead (its interval above zero to promote, below to stop). Promoted: roll back
    when the promoted version's positive rate or latency p99 regresses beyond the bounds against serving's during
    the experiment; finished after the watch.
    """
    now = time.time() if now is None else now
    if experiment.state == "promoted":
        return watch(experiment, answers, judgements, rails, now)
    mine = [a for a in answers if a.experiment == experiment.id]
    candidate_arm = {"split": "candidate", "shadow": "shadow", "interleave": "interleave"}[experiment.mode]
    serving_p99, serving_n = p99(mine, "serving")
    candidate_p99, candidate_n = p99(mine, candidate_arm)
    rate = compare(mine, judgements, candidate_arm, "positive_rate")
    evidence: dict[str, float | int | None] = {
        "positive_rate_candidate": rate.candidate, "positive_rate_serving": rate.serving,
        "positive_rate_difference": rate.difference, "positive_rate_low": rate.low, "positive_rate_high": rate.high,
        "judged_candidate": rate.judged_candidate, "judged_serving": rate.judged_serving,
        "queries_candidate": candidate_n, "queries_serving": serving_n,
        "latency_p99_candidate_ms": candidate_p99, "latency_p99_serving_ms": serving_p99}
    if experiment.mode == "interleave":
        preference = interleaving_preference(mine, judgements)
        evidence |= {"preference": preference.preference, "preference_low": preference.low,
                     "preference_high": preference.high, "preference_p_value": preference.p_value,
                     "judged_interleaved": preference.judged, "candidate_wins": preference.candidate_wins,
                     "serving_wins": preference.serving_wins, "ties": preference.ties,
                     "judged_needed": preference.needed}
        enough = preference.judged >= rails.min_judged
        better, worse = preference.low > 0 and preference.preference >= rails.margin, preference.high < 0
        summary = f"preference {preference.preference:+.3f} [{preference.low:+.3f}, {preference.high:+.3f}]"
    else:
        metric = compare(mine, judgements, candidate_arm, rails.metric)
        evidence |= {f"{rails.metric}_candidate": metric.candidate, f"{rails.metric}_serving": metric.serving,
                     f"{rails.metric}_difference": metric.difference, f"{rails.metric}_low": metric.low,
                     f"{rails.metric}_high": metric.high, "judged_needed": metric.needed}
        enough = min(metric.judged_candidate, metric.judged_serving) >= rails.min_judged
        better, worse = metric.difference >= rails.margin and metric.low > 0, metric.high < 0
        summary = (f"{rails.metric} {metric.difference:+.4f} [{metric.low:+.4f}, {metric.high:+.4f}] over "
                   f"{metric.judged_candidate}/{metric.judged_serving} judged queries")
    clean = finite(evidence)
    if experiment.mode == "split" and candidate_p99 is not None and serving_p99 and \
            min(candidate_n, serving_n) >= rails.min_latency_queries and \
            candidate_p99 > rails.latency_ratio * serving_p99:
        return Decision("stop", f"guardrail: latency p99 {candidate_p99:.1f} ms > {rails.latency_ratio:g}x serving's "
                                f"{serving_p99:.1f} ms", clean), clean
    if not enough:
        return None, clean
    if rate.difference < -rails.positive_rate_drop:
        return Decision("stop", f"guardrail: positive rate {rate.difference:+.3f} below serving (bound "
                                f"-{rails.positive_rate_drop:g})", clean), clean
    if worse:
        return Decision("stop", f"serving preferred: {summary}", clean), clean
    if better:
        return Decision("promote", f"candidate better: {summary}", clean), clean
    return None, clean


def watch(experiment: ExperimentRecord, answers: Sequence[AnswerRecord],
          judgements: Mapping[str, Mapping[str, int]], rails: Guardrails, now: float
          ) -> tuple[Decision | None, dict[str, float]]:
    """A promoted candidate against what serving did during the experiment: roll back on a regression."""
    since = experiment.ended_at or now
    after = [a for a in answers if a.answered_at >= since and a.model_version == experiment.version
             and a.arm == "serving"]
    rate = compare(after, judgements, "serving", "positive_rate")
    latency, count = p99(after, "serving")
    baseline_rate = experiment.evidence.get("positive_rate_serving")
    baseline_p99 = experiment.evidence.get("latency_p99_serving_ms")
    evidence = finite({"positive_rate_promoted": rate.serving, "judged_promoted": rate.judged_serving,
                       "latency_p99_promoted_ms": latency, "positive_rate_before": baseline_rate,
                       "latency_p99_before_ms": baseline_p99})
    if baseline_p99 and latency is not None and count >= rails.min_latency_queries \
            and latency > rails.latency_ratio * baseline_p99:
        return Decision("rollback", f"guardrail after promotion: latency p99 {latency:.1f} ms > "
                                    f"{rails.latency_ratio:g}x {baseline_p99:.1f} ms", evidence), evidence
    if baseline_rate is not None and rate.serving is not None and rate.judged_serving >= rails.min_judged \
            and rate.serving < baseline_rate - rails.positive_rate_drop:
        return Decision("rollback", f"guardrail after promotion: positive rate {rate.serving:.3f} < "
                                    f"{baseline_rate:.3f} - {rails.positive_rate_drop:g}", evidence), evidence
    if now - since >= rails.watch_s:
        return Decision("finish", "watched without regression", evidence), evidence
    return None, evidence


# control: what operators (CLI, HTTP) and the decisions send to `model-updates`

def experiment_id(version: str, mode: str, at: float, token: str | None = None) -> str:
    """A readable id that no other start shares (`v3-split-1700000000-9f2c1a`): the version, the mode, the second it
    was asked and a random token (or `token`: a test's fixed routing), so two starts within a second differ."""
    return f"{version}-{mode}-{int(at)}-{token or secrets.token_hex(3)}"


def rolling_out(slot: ServingSlot) -> str | None:
    """The version this worker's rollout is making serve now, if one is copying."""
    progress = slot.rollout
    return progress.version if progress is not None and progress.state == "copying" else None


def start_update(registry: ModelRegistry, store: EvaluationStore, version: str, mode: str, fraction: float,
                 now: float | None = None, *, rolling: str | None = None, token: str | None = None) -> ModelUpdate:
    """The `model-updates` record that starts an experiment of `version`: `UnknownModelVersion` if it is not
    registered, `CandidateServes` if it serves already or is `rolling` (the version a rollout is making serve),
    `ExperimentConflict` if another experiment of the model is live."""
    at = time.time() if now is None else now
    model = registry.get(version)
    current = registry.current()
    if current is not None and current.version == version:
        raise CandidateServes(version, "serves already")
    if rolling == version:
        raise CandidateServes(version, "is being rolled out to serve")
    live_one = store.active(registry.name)
    if live_one is not None and live_one.live:
        raise ExperimentConflict(f"experiment {live_one.id} of {live_one.version} is {live_one.state}; stop it "
                                 "first (one experiment per model at a time)")
    spec = ExperimentSpec(id=experiment_id(version, mode, at, token), mode=mode,  # type: ignore[arg-type]
                          fraction=fraction)
    return ModelUpdate(version=version, uri=model.path.as_uri(), status="experiment", experiment=spec,
                       previous_version=current.version if current else None, at=datetime.fromtimestamp(at, UTC))


def superseded(experiment: ExperimentRecord, serving: str | None) -> str | None:
    """Why a live experiment cannot go on while `serving` serves, or None: its candidate serves (made serving outside
    the experiment: an operator's promotion, the trainer's, a reindex), or its baseline no longer does."""
    if not experiment.live or serving is None:
        return None
    if serving == experiment.version:
        return f"{serving} serves now, made serving outside the experiment"
    if serving != experiment.baseline:
        return f"its baseline {experiment.baseline} no longer serves ({serving} does)"
    return None


def end_superseded(store: EvaluationStore, model: str, serving: str | Callable[[], str | None] | None,
                   cause: str | None = None, now: float | None = None) -> ExperimentRecord | None:
    """End the model's live experiment if `serving` supersedes it (state `ended`, decision `end`, the reason
    recorded); returns it when this call ended it. A conditional transition: of several workers, or of a replay of
    `model-updates`, one ends it and the others change nothing."""
    experiment = store.active(model)
    if callable(serving):  # read after the experiment: one recorded meanwhile is never judged by an older pointer
        serving = serving()
    why = None if experiment is None else superseded(experiment, serving)
    if experiment is None or why is None:
        return None
    reason = (why if cause is None else f"{why} ({cause})")[:2_000]
    ended = store.transition(experiment.id, LIVE_STATES, "ended", decision="end", reason=reason, ended=True, now=now)
    return experiment if ended else None


def end_update(store: EvaluationStore, model: str, action: Literal["stop", "promote"], reason: str
               ) -> ModelUpdate:
    """The record that ends the model's live experiment by an operator (`NoExperiment` if none is live)."""
    experiment = store.active(model)
    if experiment is None or not experiment.live:
        raise NoExperiment(f"no experiment of {model} is running")
    return ModelUpdate(version=experiment.version, uri="", status="promoted" if action == "promote" else "stopped",
                       metrics=finite({k: v for k, v in experiment.evidence.items() if isinstance(v, int | float)}),
                       reason=reason, previous_version=experiment.baseline, at=datetime.now(UTC),
                       experiment=ExperimentSpec(id=experiment.id, mode=experiment.mode,  # type: ignore[arg-type]
                                                 fraction=experiment.fraction))


def report(store: EvaluationStore, experiment: ExperimentRecord, rails: Guardrails) -> dict[str, object]:
    """An experiment with its evidence now, the decision it would reach, and its metrics per arm and slice
    (shadow rows: overlap@10 and rank correlation with serving)."""
    found = store.judged_answers(since=experiment.started_at, experiment=experiment.id)
    decision, evidence = decide(experiment, found.answers, found.judgements, rails) if experiment.state in (
        "running", "promoted") else (None, experiment.evidence)
    return {"experiment": experiment.as_dict(), "evidence": evidence,
            "would_decide": None if decision is None else {"action": decision.action, "reason": decision.reason},
            "arms": summarize(found.answers, found.judgements, ("arm",)),
            "slices": summarize(found.answers, found.judgements, ("arm", "slice"))}
