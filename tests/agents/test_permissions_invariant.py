"""The permission invariant, searched for a counter-example: no answer ever holds a document its caller may not
read, nor one deleted. Hypothesis drives the real agents (ingest, query, rollout, experiment) in the in-process
harness over qdrant-edge collections: random documents, ACLs, updates, deletes and writes that fail half-way,
queries over Kafka (any principals) and HTTP (each API key's principals) in every mode and grouping, cached or not,
while shadow, split and interleave experiments run, while a blue/green rollout is under way and after a rollback.
At the end every caller asks for everything, and must get exactly what it may read: hiding too much fails too."""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas import ModelUpdate
from streams.devtools.harness import Harness, double_registry, message
from streams.ml.experiments import rolling_out, start_update
from streams.ml.serving import PairOpener, Serving, serving_pair
from streams.ml.trainer import promote_update, rollback_update
from streams.settings import Settings
from streams.state.edge_store import EdgeVectorStore
from streams.state.errors import GristmillError, NothingToRollBack
from streams.state.hashing_encoder import HashingEncoder
from streams.web.http import build_http_app

DIM = 64
VERSIONS = ("v1", "v2", "v3")
PRINCIPALS = ("user:ann", "user:ben", "group:eng", "group:ops")
KEYS = {"key-ann-0c3f9e5d2b7a": ["user:ann"], "key-ben-7a41d2c8e09f": ["user:ben", "group:eng"],
        "key-nobody-5e8b1c4a": []}
DOCS = tuple(f"doc{n}" for n in range(6))
WORDS = ("plan", "budget", "roadmap", "salary", "canteen", "engine", "review")
SETTINGS: dict[str, Any] = {"query_cache_ttl_s": 3600.0, "rollout_step_documents": 1, "rollout_retire_after_s": 0.0,
                            "experiment_min_judged": 10_000, "admin_token": "admin-token-1f7e3a9c"}

restricted = st.lists(st.sampled_from(PRINCIPALS), min_size=1, max_size=3, unique=True)
acls = st.none() | restricted
texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
put = st.tuples(st.just("put"), st.sampled_from(DOCS), texts, acls)
fail = st.tuples(st.just("fail"), st.sampled_from(DOCS), texts, acls)  # a put whose write fails half-way
delete = st.tuples(st.just("delete"), st.sampled_from(DOCS))
asks = st.fixed_dictionaries({"text": texts, "k": st.integers(1, 8), "mode": st.sampled_from(("dense", "sparse",
                                                                                               "hybrid")),
                              "group": st.sampled_from(("chunk", "doc")), "user": st.sampled_from(("u1", "u2", "u3"))})
ask_kafka = st.tuples(st.just("ask_kafka"), asks, st.none() | st.lists(st.sampled_from(PRINCIPALS), max_size=3,
                                                                        unique=True))
ask_http = st.tuples(st.just("ask_http"), asks, st.sampled_from((*KEYS, SETTINGS["admin_token"])),
                     st.sampled_from(("GET", "POST")))
experiment = st.tuples(st.just("experiment"), st.sampled_from(("shadow", "split", "interleave")),
                       st.sampled_from(VERSIONS), st.sampled_from((0.5, 1.0)))
promote = st.tuples(st.just("promote"), st.sampled_from(VERSIONS))
steps = st.lists(st.one_of(put, put, fail, delete, ask_kafka, ask_kafka, ask_http, ask_http, experiment, promote,
                           st.just(("rollback",)), st.just(("settle",)), st.just(("look",))), min_size=4, max_size=30)
#: Documents first (most of them restricted), then anything, then every caller asks in every mode and grouping.
programs = st.tuples(st.lists(st.tuples(st.just("put"), st.sampled_from(DOCS), texts, acls | restricted),
                              min_size=3, max_size=6), steps).map(lambda parts: parts[0] + parts[1])
EVERYTHING = " ".join(WORDS)
#: Asked just after a rollout starts, while it copies.
DURING = [("ask_http", {"text": "plan budget", "k": 8, "mode": "hybrid", "group": "chunk", "user": "u1"},
           "key-ben-7a41d2c8e09f", "POST"),
          ("ask_kafka", {"text": "roadmap salary", "k": 8, "mode": "dense", "group": "doc", "user": "u2"},
           ["user:ann"])]
FAILS = "unstorable"  # a text holding it is refused by the store (`RefusingStore`)
LOOK = [("ask_http", {"text": EVERYTHING, "k": 8, "mode": "hybrid", "group": "doc", "user": "u1"}, key, "GET")
        for key in KEYS] + [("ask_kafka", {"text": EVERYTHING, "k": 8, "mode": "dense", "group": "chunk", "user": "u3"},
                             ["group:eng"])]
SWEEP = [step for mode in ("dense", "sparse", "hybrid") for group in ("chunk", "doc") for step in (
    *[("ask_http", {"text": EVERYTHING, "k": 8, "mode": mode, "group": group, "user": user}, key, "POST")
      for key in (*KEYS, SETTINGS["admin_token"]) for user in ("u1", "u2")],
    *[("ask_kafka", {"text": EVERYTHING, "k": 8, "mode": mode, "group": group, "user": user}, principals)
      for principals in (None, ["user:ann"], ["group:ops", "user:ben"], list(PRINCIPALS)) for user in ("u1", "u2")])]


class RefusingStore(EdgeVectorStore):
    """Refuses the ledger entry of a text holding `FAILS` after its chunks were written (a half-applied write, as a
    store refusing a payload leaves it)."""

    def put_documents(self, states):  # type: ignore[no-untyped-def]
        if any(FAILS in (state.text or "") for state in states):
            raise TypeError("the store refuses this document's payload")
        super().put_documents(states)


def edge_pairs(settings: Settings) -> PairOpener:
    """A hashing encoder and the version's qdrant-edge collection under the data directory, as deployed."""
    def open_pair(model: Any) -> Serving:
        store = RefusingStore(settings.data_dir / "qdrant", f"chunks-{model.version}", DIM)
        return serving_pair(settings, model, HashingEncoder(model.version, DIM), store)
    return open_pair


@dataclass
class Truth:
    """What each document's latest event says: its acl (None: public), or that it is deleted."""

    acl: dict[str, list[str] | None] = field(default_factory=dict)
    version: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    restricted_answered: int = 0

    def readable(self, principals: list[str]) -> set[str]:
        return {doc for doc, acl in self.acl.items() if acl is None or set(acl) & set(principals)}

    def failed(self, doc: str, acl: list[str] | None) -> None:
        """A write of `doc` with `acl` failed: its last applied version stays, readable by whom both acls allow."""
        if doc in self.acl:
            old = self.acl[doc]
            self.acl[doc] = acl if old is None else old if acl is None else sorted(set(old) & set(acl))

    def check(self, who: str, principals: list[str], hits: list[dict[str, Any]], everything: bool = False) -> None:
        """`everything`: asked for every document at once, so the hits must be exactly those it may read."""
        if everything and {hit["doc_id"] for hit in hits} != self.readable(principals):
            self.violations.append(f"{who} ({principals}) asked for everything, got {sorted(h['doc_id'] for h in hits)}"
                                   f", may read {sorted(self.readable(principals))}")
        for hit in hits:
            doc = hit["doc_id"]
            self.restricted_answered += bool(self.acl.get(doc))
            if doc not in self.acl:
                self.violations.append(f"{who}: {doc} is deleted or was never indexed")
            elif (acl := self.acl[doc]) is not None and not set(acl) & set(principals):
                self.violations.append(f"{who} ({principals}): {doc} is readable by {acl} only")


async def scenario(client: TestClient, harness: Harness, program: list[tuple[Any, ...]]) -> Truth:
    truth = Truth()
    rolling: asyncio.Future[None] | None = None
    answered = 0

    async def settle() -> None:
        nonlocal rolling
        if rolling is not None:
            await rolling
            rolling = None
        for tick in harness.timers:
            await tick()

    async def roll(update: ModelUpdate, n: int) -> None:
        """Start the rollout `update` asks for, and ask while it copies (the steps after it too)."""
        nonlocal rolling
        rolling = asyncio.ensure_future(harness.deliver("model-updates", [message("model-updates", update,
                                                                                  "minilm")]))
        await asyncio.sleep(0)
        for during in DURING:
            await run(during, n)

    async def run(step: tuple[Any, ...], n: int) -> None:
        nonlocal answered
        match step:
            case ("put", doc, text, acl):
                truth.version[doc] = truth.version.get(doc, 0) + 1
                await harness.deliver("documents", [{"doc_id": doc, "version": truth.version[doc], "op": "upsert",
                                                     "text": text, "acl": acl}])
                truth.acl[doc] = acl
            case ("fail", doc, text, acl):
                truth.version[doc] = truth.version.get(doc, 0) + 1
                await harness.deliver("documents", [{"doc_id": doc, "version": truth.version[doc], "op": "upsert",
                                                     "text": f"{text} {FAILS}", "acl": acl}])
                if doc in truth.acl:
                    event("a write of an indexed document failed half-way")
                truth.failed(doc, acl)
            case ("delete", doc):
                truth.version[doc] = truth.version.get(doc, 0) + 1
                await harness.deliver("documents", [{"doc_id": doc, "version": truth.version[doc], "op": "delete"}])
                truth.acl.pop(doc, None)
            case ("ask_kafka", ask, principals):
                await harness.deliver("queries", [{"query_id": f"q{n}-{answered}", "text": ask["text"],
                                                   "top_k": ask["k"], "mode": ask["mode"], "group": ask["group"],
                                                   "user_id": ask["user"], "principals": principals}])
                responses = harness.published("responses")[answered:]
                answered += len(responses)
                if len(responses) != 1:
                    truth.violations.append(f"kafka q{n}: {len(responses)} responses")
                for response in responses:
                    event(f"kafka answer from the {response.arm} arm")  # type: ignore[attr-defined]
                    truth.check(f"kafka {response.query_id}",  # type: ignore[attr-defined]
                                principals or [], [h.model_dump() for h in response.hits],  # type: ignore[attr-defined]
                                everything=ask["text"] == EVERYTHING)
            case ("ask_http", ask, key, method):
                body = {"q": ask["text"], "k": ask["k"], "mode": ask["mode"], "group": ask["group"],
                        "user_id": ask["user"]}
                headers = {"Authorization": f"Bearer {key}"}
                response = await (client.get("/search", params=body, headers=headers) if method == "GET"
                                  else client.post("/search", json=body, headers=headers))
                assert response.status == 200, await response.text()
                if rolling is not None and not rolling.done():
                    event("asked over HTTP while a rollout copies")
                truth.check(f"http {n} {method} {key}", KEYS.get(key, []), (await response.json())["hits"],
                            everything=ask["text"] == EVERYTHING)
            case ("experiment", mode, version, fraction):
                await settle()
                try:
                    update = start_update(harness.shared.registry, harness.shared.evaluation, version, mode,
                                          fraction, rolling=rolling_out(harness.shared.serving))
                except GristmillError:  # serving already, or another experiment is live: a refusal
                    return
                await harness.deliver("model-updates", [message("model-updates", update, "minilm")])
                await settle()  # the experiment agent builds the challenger
            case ("promote", version):
                await settle()
                await roll(promote_update(harness.shared.registry, version, "property test"), n)
            case ("rollback",):
                await settle()
                try:
                    await roll(rollback_update(harness.shared.registry), n)
                except NothingToRollBack:
                    return
            case ("settle",):
                await settle()
            case ("look",):  # everything, as a few callers: cached, and must be exact whenever asked again
                for look in LOOK:
                    await run(look, n)

    for n, step in enumerate(program):
        await run(step, n)
    await settle()
    event(f"serving {harness.shared.serving.current.model.version} at the end")
    return truth


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
          print_blob=True)
@given(program=programs, retire_after_s=st.sampled_from((0.0, 3600.0)))  # a retired pair closed, or kept warm
def test_no_answer_ever_holds_a_document_its_caller_may_not_read(program: list[tuple[Any, ...]],
                                                                 retire_after_s: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "keys.json").write_text(json.dumps({"keys": [
            {"key": key, "name": key.split("-")[1], "principals": principals, "roles": ["search", "read"]}
            for key, principals in KEYS.items()]}), encoding="utf-8")
        registry = double_registry(root / "models", versions=VERSIONS, dim=DIM)
        options = {**SETTINGS, "api_keys_file": root / "keys.json", "rollout_retire_after_s": retire_after_s}
        harness = Harness(root, registry=registry, opener=edge_pairs(Settings(data_dir=root, **options)), **options)
        with harness.register("ingest", "query", "rollout", "experiment") as running:
            async def main() -> Truth:
                async with TestClient(TestServer(build_http_app(running))) as client:
                    return await scenario(client, running, [*program, *SWEEP])
            truth = running.run(main())
    event("restricted documents answered to those who may read them" if truth.restricted_answered else
          "no restricted document answered")
    assert truth.violations == []


def test_the_invariant_check_sees_a_leak() -> None:
    """The check the property relies on: a hit outside the caller's principals, or deleted, is a violation."""
    truth = Truth(acl={"open": None, "eng": ["group:eng"]})
    truth.check("ann", ["user:ann"], [{"doc_id": "open"}, {"doc_id": "eng"}, {"doc_id": "gone"}])
    truth.check("ben", ["user:ben", "group:eng"], [{"doc_id": "open"}, {"doc_id": "eng"}])
    assert len(truth.violations) == 2

