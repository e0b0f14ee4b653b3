"""Live experiments end to end in the in-process harness (the real agents over one shared state, on disk): a
candidate better on one slice and worse on another, simulated users whose feedback follows relevance."""

from pathlib import Path

from schemas import ModelUpdate, QueryResponse
from streams.devtools.demo.experiment_world import catalogue, documents, judge, query_stream, sliced_pairs
from streams.devtools.harness import Harness, double_registry, message
from streams.ml.evaluation import summarize
from streams.ml.experiments import start_update
from streams.settings import Settings
from streams.state.registry import LocalModelRegistry

AGENTS = ("ingest", "query", "feedback", "rollout", "experiment")
SETTINGS = {"experiment_min_judged": 40, "rollout_retire_after_s": 0.0, "feedback_hold_s": 60.0,
            # hashing encoders answer in microseconds: their latency is noise, not a model's cost
            "experiment_guardrail_latency_ratio": 1e6}
STARTED = 1_700_000_000.0  # a fixed start and token give a fixed experiment id: users land on the same sides every run


def updates_back(harness: Harness, start: int) -> int:
    """Deliver the model updates the agents published since `start` to the rollout agent, as Kafka would."""
    published = harness.outbox.records["model-updates"]
    harness.send("model-updates", [message("model-updates", record, key) for key, record in published[start:]])
    return len(published)


def ask(harness: Harness, stream: list, start: int) -> list[QueryResponse]:
    """Queries, then each simulated user's feedback on what they were served."""
    harness.send("queries", [a.query for a in stream])
    responses = harness.published("responses")[start:]
    by_id = {r.query_id: r for r in responses}  # type: ignore[attr-defined]
    feedback = [f for a in stream for f in judge(a, [h.doc_id for h in by_id[a.query.query_id].hits])]
    harness.send("feedback", feedback)
    return responses  # type: ignore[return-value]


def open_harness(tmp_path: Path, views: dict[str, str], opener: object = None) -> Harness:
    registry_root = tmp_path / "models"
    registry = LocalModelRegistry(registry_root, "minilm") if registry_root.exists() else double_registry(
        registry_root, versions=("v1", "v2"), dim=256)
    settings = Settings(data_dir=tmp_path, **SETTINGS)
    return Harness(tmp_path, registry=registry, opener=opener or sliced_pairs(settings, views),  # type: ignore
                   **SETTINGS).register(*AGENTS)


def test_a_better_split_candidate_promotes_itself_across_a_restart_and_slices_show_both_effects(
        tmp_path: Path) -> None:
    views = {"v1": "words", "v2": "codes+prefixes"}  # the candidate: codes right, topics confused
    items = catalogue()
    settings = Settings(data_dir=tmp_path, **SETTINGS)
    opener = sliced_pairs(settings, views)  # the indexes outlive a worker restart, as on disk
    harness = open_harness(tmp_path, views, opener)
    harness.send("documents", documents(items))
    update = start_update(harness.shared.registry, harness.shared.evaluation, "v2", "split", 0.5,
                          now=STARTED, token="t")
    harness.send("model-updates", [message("model-updates", update, "minilm")])
    harness.tick()  # builds v2's collection beside v1 through the rollout's copy, then runs
    assert harness.shared.serving.challenger is not None
    assert harness.shared.serving.current.model.version == "v1"
    responses = ask(harness, query_stream(items, 60, seed=1, prefix="a"), 0)
    arms = {(r.arm, r.model_version) for r in responses}
    assert arms == {("serving", "v1"), ("candidate", "v2")}  # a user always lands on the same side
    by_user: dict[str, set[str]] = {}
    for asked, response in zip(query_stream(items, 60, seed=1, prefix="a"), responses, strict=True):
        by_user.setdefault(asked.query.user_id or "", set()).add(response.arm)
    assert all(len(sides) == 1 for sides in by_user.values())
    harness.tick()  # too few judged queries: no decision yet
    assert harness.shared.evaluation.active("minilm").state == "running"  # type: ignore[union-attr]
    harness.close()

    harness = open_harness(tmp_path, views, opener)  # the worker restarts mid-experiment
    assert harness.shared.evaluation.active("minilm").state == "running"  # type: ignore[union-attr]
    assert len(harness.shared.evaluation.answers()) == 60  # the store kept every answer
    harness.tick()  # the challenger is rebuilt
    assert harness.shared.serving.challenger is not None
    ask(harness, query_stream(items, 200, seed=2, prefix="b"), 0)
    published = len(harness.outbox.records["model-updates"])
    harness.tick()
    decision = harness.published("model-updates")[published:]
    assert [u.status for u in decision] == ["promoted"], [u.reason for u in decision]  # type: ignore[attr-defined]
    promoted: ModelUpdate = decision[0]  # type: ignore[assignment]
    assert promoted.version == "v2" and promoted.metrics["mrr@10_low"] > 0
    assert promoted.metrics["judged_candidate"] >= 40 and promoted.experiment is not None
    updates_back(harness, published)
    assert harness.shared.serving.current.model.version == "v2"
    assert harness.shared.evaluation.active("minilm").state == "promoted"  # type: ignore[union-attr]

    store = harness.shared.evaluation
    answers = store.answers()
    rows = {(r["arm"], r["slice"]): r for r in summarize(answers, store.judgements(), ("arm", "slice"),
                                                             ("segment",)) if r["arm"] in ("serving", "candidate")}
    codes, topics = "segment=codes", "segment=topics"
    assert rows[("candidate", codes)]["mrr@10"] > rows[("serving", codes)]["mrr@10"]  # better on codes
    assert rows[("candidate", topics)]["mrr@10"] < rows[("serving", topics)]["mrr@10"]  # worse on topics
    harness.close()


def test_a_worse_shadow_is_stopped_and_never_serves_while_clients_get_the_serving_answer(tmp_path: Path) -> None:
    views = {"v1": "all", "v2": "codes+prefixes"}  # serving sees everything; the candidate confuses topics
    items = catalogue()
    harness = open_harness(tmp_path, views)
    harness.send("documents", documents(items))
    update = start_update(harness.shared.registry, harness.shared.evaluation, "v2", "shadow", 1.0,
                          now=STARTED, token="t")
    harness.send("model-updates", [message("model-updates", update, "minilm")])
    harness.tick()
    stream = query_stream(items, 160, seed=3, prefix="s")
    responses = ask(harness, stream, 0)
    harness.run(harness.shared.answering.shadow.drain())
    assert {(r.arm, r.model_version) for r in responses} == {("serving", "v1")}  # nobody sees the shadow
    shadow = [a for a in harness.shared.evaluation.answers() if a.arm == "shadow"]
    assert len(shadow) == 160 and {a.model_version for a in shadow} == {"v2"}
    published = len(harness.outbox.records["model-updates"])
    harness.tick()
    decision = harness.published("model-updates")[published:]
    assert [u.status for u in decision] == ["stopped"]  # type: ignore[attr-defined]
    updates_back(harness, published)
    harness.tick()  # the challenger goes
    assert harness.shared.serving.challenger is None
    assert harness.shared.serving.current.model.version == "v1"
    assert harness.shared.registry.current().version == "v1"  # type: ignore[union-attr]
    stopped = harness.shared.evaluation.experiments("minilm")[0]
    assert (stopped.state, stopped.decision) == ("stopped", "stop")
    store = harness.shared.evaluation
    rows = {(r["arm"], r["slice"]): r for r in summarize(store.answers(), store.judgements(), ("arm", "slice"),
                                                         ("segment",))}
    codes, topics = "segment=codes", "segment=topics"
    assert abs(rows[("shadow", codes)]["mrr@10"] - rows[("serving", codes)]["mrr@10"]) < 0.05  # both see codes
    assert rows[("shadow", topics)]["mrr@10"] < rows[("serving", topics)]["mrr@10"]  # the estimate sees the loss
    assert 0 < rows[("shadow", topics)]["overlap@10"] < 1 and rows[("shadow", topics)]["queries"] == 80
    harness.close()
