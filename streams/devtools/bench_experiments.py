"""`gristmill bench experiments`: how many judged queries a split and an interleaving experiment need to tell a
better candidate from serving, on the same query streams and the same simulated users (position-biased clicks;
the generated world of `streams.devtools.demo.experiment_world`, the real agents in the in-process harness)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streams.devtools.demo.experiment_world import catalogue, click, documents, query_stream, sliced_pairs
from streams.devtools.harness import Harness, double_registry, message
from streams.ml.evaluation import compare, interleaving_preference
from streams.ml.experiments import start_update
from streams.settings import Settings

VIEWS = {"v1": "codes+prefixes", "v2": "all"}  # the candidate tells apart topics that serving confuses


def run_stream(mode: str, fraction: float, queries: int, seed: int) -> dict[str, Any]:
    """One experiment over `queries` queries and their simulated feedback; what it measured (never deciding)."""
    with tempfile.TemporaryDirectory(prefix="gristmill-bench-exp-") as tmp:
        root = Path(tmp)
        overrides = {"experiment_min_judged": 10**9, "experiment_guardrail_latency_ratio": 1e6,
                     "feedback_hold_s": 600.0}  # measure, never decide
        settings = Settings(data_dir=root, **overrides)
        harness = Harness(root, registry=double_registry(root / "models", versions=("v1", "v2"), dim=256),
                          opener=sliced_pairs(settings, VIEWS), **overrides)
        harness.register("ingest", "query", "feedback", "rollout", "experiment")
        items = catalogue()
        harness.send("documents", documents(items))
        update = start_update(harness.shared.registry, harness.shared.evaluation, "v2", mode, fraction,
                              now=1_700_000_000.0 + seed, token="bench")  # the same routing every run
        harness.send("model-updates", [message("model-updates", update, settings.model_name)])
        harness.tick()
        stream = query_stream(items, queries, seed, "bench", top_k=5)
        for start in range(0, len(stream), 50):
            part = stream[start:start + 50]
            harness.send("queries", [a.query for a in part])
            served = {r.query_id: [h.doc_id for h in r.hits]  # type: ignore[attr-defined]
                      for r in harness.published("responses")[start:]}
            harness.send("feedback", [f for a in part for f in click(a, served[a.query.query_id])])
        store = harness.shared.evaluation
        answers = store.answers()
        judgements = store.judgements()
        harness.close()
    if mode == "interleave":
        return {"interleave": interleaving_preference(answers, judgements).as_dict()}
    return {"split": compare(answers, judgements, "candidate", "mrr@10").as_dict()}


def needed_text(values: list[int | None]) -> str:
    """Median [min, max] over the streams; streams that never decided count as not deciding."""
    decided = sorted(v for v in values if v is not None)
    if not decided:
        return "not within the streams"
    median = decided[len(decided) // 2]
    missing = len(values) - len(decided)
    return f"{median:,} [{decided[0]:,}, {decided[-1]:,}]" + (f", {missing} undecided" if missing else "")


def run_experiments_bench(queries: int, console: Console, streams: int = 5) -> dict[str, Any]:
    """Both methods over the same `streams` generated streams (seeds), each of `queries` queries."""
    console.print(f"split (50% of users) and interleaving (every query), {streams} streams of {queries:,} "
                  "queries each...")
    splits = [run_stream("split", 0.5, queries, seed)["split"] for seed in range(streams)]
    interleaves = [run_stream("interleave", 1.0, queries, seed)["interleave"] for seed in range(streams)]
    first_split, first_interleave = splits[0], interleaves[0]
    table = Table(title=f"gristmill bench experiments: the same {streams} streams of {queries:,} queries, "
                        "position-biased simulated users")
    for column in ("method", "judged queries", "effect [95% CI], first stream", "judged queries needed: median "
                                                                                "[min, max]"):
        table.add_column(column, justify="left" if column == "method" else "right")
    table.add_row("split: MRR@10 candidate - serving",
                  f"{first_split['judged_candidate'] + first_split['judged_serving']:,}",
                  f"{first_split['difference']:+.3f} [{first_split['low']:+.3f}, {first_split['high']:+.3f}]",
                  needed_text([s["needed"] for s in splits]))
    table.add_row("interleave: preference for the candidate", f"{first_interleave['judged']:,}",
                  f"{first_interleave['preference']:+.3f} [{first_interleave['low']:+.3f}, "
                  f"{first_interleave['high']:+.3f}]", needed_text([i["needed"] for i in interleaves]))
    console.print(table)
    return {"split": splits, "interleave": interleaves}
