"""`gristmill bench flywheel`: one retrain on generated feedback pairs, and one blue/green rollout, each next to
its baseline in the same run (serving-model nDCG for the retrain, first-time indexing of the same documents
for the rollout)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from schemas import DocumentEvent
from streams.devtools.demo.catalog import code_queries, products
from streams.devtools.demo.synthetic import documents
from streams.ml.serving import open_registry
from streams.ml.training import Hyperparameters, TrainingJob, TrainingResult
from streams.settings import Settings
from streams.state.registry import LocalModelRegistry, ensure_base_model


def retrain_bench(settings: Settings, pairs: int, scratch: Path) -> tuple[TrainingResult, float]:
    """A training job on `pairs` positive pairs (searches by part code, judged), run as the trainer runs it."""
    base = ensure_base_model(open_registry(settings))
    catalog = products(max(2, pairs // 8))
    corpus = {p.doc_id: p.text for p in catalog}
    judged = [{"query_id": q.query_id, "query": q.text, "doc_id": q.doc_id, "text": corpus[q.doc_id],
               "kind": "positive", "source": "feedback", "feedback_offset": f"bench.feedback/0@{i}"}
              for i, q in enumerate(code_queries(catalog)[:pairs])]
    params = Hyperparameters(settings.trainer_epochs, settings.trainer_batch_size, settings.trainer_learning_rate,
                             held_out_fraction=settings.trainer_held_out_fraction)
    job_dir = scratch / "job"
    TrainingJob(base.version, base.source, judged, corpus, params).write(job_dir)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "streams.ml.training", str(job_dir)], check=True, capture_output=True)
    return TrainingResult.read(job_dir), time.perf_counter() - started


def rollout_bench(settings: Settings, chunks: int, scratch: Path, console: Console) -> dict[str, float]:
    """Index documents up to `chunks` chunks (baseline), then roll the index out to a second version."""
    from streams.devtools.harness import MemoryOutbox
    from streams.ml.rollout import roll_out
    from streams.shared import Shared

    source_registry = open_registry(settings)
    base = ensure_base_model(source_registry)
    models = scratch / "models"
    shutil.copytree(base.path, models / settings.model_name / base.version)
    registry = LocalModelRegistry(models, settings.model_name)
    registry.promote(base.version)
    bench = settings.model_copy(update={"data_dir": scratch / "data", "registry_dir": models, "faults_file": None,
                                        "rollout_retire_after_s": 0.0})
    shared = Shared.open(bench, MemoryOutbox())
    events: list[DocumentEvent] = []
    total, seed = 0, 0
    while total < chunks:
        batch = documents(200, seed, mean_words=220)
        seed += 1
        total += sum(len(c) for c in shared.serving.current.chunker.split_many([e.content for e in batch]))
        events += batch
    console.print(f"indexing {len(events):,} documents ({total:,} chunks) with {base.version} (baseline)...")
    started = time.perf_counter()
    for start in range(0, len(events), bench.ingest_batch_records):
        shared.serving.apply_documents(events[start:start + bench.ingest_batch_records])
    ingest_s = time.perf_counter() - started
    staging = scratch / "v2-files"
    shutil.copytree(base.path, staging)
    second = registry.register(staging, source=base.source, facts={"dim": base.dim, "max_tokens": base.max_tokens},
                               lineage={"base_version": base.version, "note": "bench copy"})
    console.print(f"rolling out {second.version} over {shared.serving.current.store.count_chunks():,} chunks...")

    async def timed_rollout() -> float:
        begun = time.perf_counter()
        await roll_out(shared.serving, second.version, shared.threads.write, bench.rollout_step_documents)
        return time.perf_counter() - begun

    try:
        rollout_s = asyncio.run(timed_rollout())
        assert shared.serving.current.model.version == second.version
        copied = shared.serving.current.store.count_chunks()
    finally:
        shared.close()
    return {"documents": len(events), "chunks": total, "copied_chunks": copied, "ingest_s": ingest_s,
            "rollout_s": rollout_s}


def run_flywheel_bench(settings: Settings, pairs: int, chunks: int, console: Console) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="gristmill-bench-flywheel-"))
    try:
        console.print(f"retrain on {pairs:,} pairs (child process, as the trainer runs it)...")
        result, wall = retrain_bench(settings, pairs, scratch)
        rollout = rollout_bench(settings, chunks, scratch, console)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = Table(title="gristmill bench flywheel")
    for column in ("measure", "value", "baseline", "ratio"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    table.add_row("retrain wall time (train + eval + ONNX export)", f"{wall:.1f} s", "", "")
    table.add_row(f"  of which fine-tuning ({result.train_pairs:,} pairs, {settings.trainer_epochs} epochs)",
                  f"{result.train_seconds:.1f} s", "", "")
    ndcg = result.candidate["nDCG@10"], result.current["nDCG@10"]
    table.add_row(f"held-out nDCG@10 ({result.held_out_queries} queries) vs serving model",
                  f"{ndcg[0]:.4f}", f"{ndcg[1]:.4f}", f"{ndcg[0] / ndcg[1]:.2f}x" if ndcg[1] else "-")
    mrr = result.candidate["MRR@10"], result.current["MRR@10"]
    table.add_row("held-out MRR@10 vs serving model", f"{mrr[0]:.4f}", f"{mrr[1]:.4f}",
                  f"{mrr[0] / mrr[1]:.2f}x" if mrr[1] else "-")
    table.add_row(f"rollout of {rollout['copied_chunks']:,} chunks vs first indexing", f"{rollout['rollout_s']:.1f} s",
                  f"{rollout['ingest_s']:.1f} s", f"{rollout['rollout_s'] / rollout['ingest_s']:.2f}x")
    table.add_row("rollout chunks/s vs indexing chunks/s", f"{rollout['chunks'] / rollout['rollout_s']:.0f}",
                  f"{rollout['chunks'] / rollout['ingest_s']:.0f}", "")
    console.print(table)
    console.print({k: round(v, 4) for k, v in asdict(result).items() if isinstance(v, float)})
