"""`gristmill bench flywheel`: time from feedback to a served model, on an index of its own.

Indexes a corpus (first-time indexing: the rollout's baseline), stores judged feedback pairs, asks the trainer
for a retrain exactly as the worker does (the training child, its phases, the held-out evaluation ranked like
serving over the index), then rolls the candidate out. The same run also times the held-out evaluation as it
was before it reused the index (every document embedded whole by both models in PyTorch), so the phase split is
shown before and after side by side.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from schemas import DocumentEvent, RetrainRequest
from streams.devtools.demo import CORPUS
from streams.devtools.demo.catalog import code_queries, products
from streams.devtools.demo.synthetic import documents as synthetic_documents
from streams.ml.ranking import mrr_at, ndcg_at
from streams.ml.serving import open_registry
from streams.ml.training import PHASES, split_pairs
from streams.settings import Settings
from streams.state.registry import LocalModelRegistry, ensure_base_model
from streams.state.training_pairs import TrainingPair

Judged = Mapping[str, tuple[str, dict[str, int]]]


def whole_document_metrics(model: Any, judged: Judged, corpus: Mapping[str, str]) -> dict[str, float]:
    """The held-out evaluation as it was before it reused the index: every document embedded whole (truncated at
    the model's window) by the model in PyTorch, ranked by cosine; the baseline of this benchmark."""
    if not judged:
        return {"nDCG@10": 0.0, "MRR@10": 0.0}
    doc_ids = list(corpus)
    docs = model.encode([corpus[d] for d in doc_ids], batch_size=64, normalize_embeddings=True,
                        convert_to_tensor=True)
    query_ids = list(judged)
    queries = model.encode([judged[q][0] for q in query_ids], batch_size=64, normalize_embeddings=True,
                           convert_to_tensor=True)
    top = (queries @ docs.T).topk(min(10, len(doc_ids)), dim=1).indices.tolist()
    rankings = {q: [doc_ids[j] for j in row] for q, row in zip(query_ids, top, strict=True)}
    return {"nDCG@10": sum(ndcg_at(rankings[q], judged[q][1], 10) for q in query_ids) / len(query_ids),
            "MRR@10": sum(mrr_at(rankings[q], judged[q][1], 10) for q in query_ids) / len(query_ids)}


def corpus_events(count: int, catalog_size: int) -> list[DocumentEvent]:
    """The product catalogue the feedback is about, then the bundled reference pages, then generated text."""
    events = [DocumentEvent(doc_id=p.doc_id, version=1, op="upsert", text=p.text) for p in products(catalog_size)]
    for line in CORPUS.read_text(encoding="utf-8").splitlines()[:max(0, count - len(events))]:
        events.append(DocumentEvent.model_validate(json.loads(line)))
    if len(events) < count:
        events += synthetic_documents(count - len(events), 11, mean_words=220)
    return events[:count]


@dataclass
class FlywheelRun:
    documents: int
    chunks: int
    index_s: float
    pairs: int
    held_out: int
    retrain_s: float
    rollout_s: float
    feedback_to_served_s: float
    phases: dict[str, float]
    before: dict[str, float]  # the whole-document PyTorch evaluation of each model, seconds
    after_metrics: dict[str, float]
    before_metrics: dict[str, float]
    decision: str


def run_flywheel(settings: Settings, pair_count: int, document_count: int, scratch: Path,
                 console: Console) -> FlywheelRun:
    from sentence_transformers import SentenceTransformer

    from streams.devtools.harness import MemoryOutbox
    from streams.ml.rollout import roll_out
    from streams.shared import Shared

    base = ensure_base_model(open_registry(settings))
    models = scratch / "models"
    shutil.copytree(base.path, models / settings.model_name / base.version)
    registry = LocalModelRegistry(models, settings.model_name)
    registry.promote(base.version)
    bench = settings.model_copy(update={"data_dir": scratch / "data", "registry_dir": models, "faults_file": None,
                                        "rollout_retire_after_s": 0.0})
    catalog = products(max(2, pair_count // 4))
    queries = code_queries(catalog)[:pair_count]
    events = corpus_events(max(document_count, len(catalog)), len(catalog))
    shared = Shared.open(bench, MemoryOutbox())
    try:
        console.print(f"indexing {len(events):,} documents with {base.version} (the rollout's baseline)...")
        started = time.perf_counter()
        for start in range(0, len(events), bench.ingest_batch_records):
            shared.serving.apply_documents(events[start:start + bench.ingest_batch_records])
        index_s = time.perf_counter() - started
        chunks = shared.serving.current.store.count_chunks()
        texts = {p.doc_id: p.text for p in catalog}
        pairs = [TrainingPair(q.query_id, q.text, q.doc_id, texts[q.doc_id], "positive", "feedback",
                              f"bench.feedback/0@{i}") for i, q in enumerate(queries)]
        shared.pairs.add(pairs)
        console.print(f"retrain on {len(pairs):,} positive pairs over {chunks:,} chunks, then the rollout...")

        async def feedback_to_served() -> tuple[list[Any], float, float]:
            begun = time.perf_counter()
            updates = await shared.trainer.handle(RetrainRequest(reason="manual", pairs=len(pairs),
                                                                 requested_at=datetime.now(UTC)))
            trained = time.perf_counter()
            version = updates[0].version  # promoted at the switch, as the worker applying the decision does
            await roll_out(shared.serving, version, shared.threads.write, bench.rollout_step_documents,
                           claim=partial(shared.serving.registry.promote, version, expected=base.version))
            return updates, trained - begun, time.perf_counter() - trained

        updates, retrain_s, rollout_s = asyncio.run(feedback_to_served())
        if updates[-1].status == "failed":
            raise RuntimeError(f"the retrain failed: {updates[-1].reason}")
        candidate = registry.get(updates[0].version)
        assert shared.serving.current.model.version == candidate.version
        corpus = {e.doc_id: e.content for e in events}
    finally:
        shared.close()

    console.print("the held-out evaluation as before (whole documents, PyTorch, both models)...")
    _, judged = split_pairs([p.__dict__ for p in pairs], bench.trainer_held_out_fraction)
    before: dict[str, float] = {}
    before_metrics: dict[str, float] = {}
    for name, source in (("serving", base.source), ("candidate", candidate.source)):
        model = SentenceTransformer(source, device="cpu")
        began = time.perf_counter()
        measured = whole_document_metrics(model, judged, corpus)
        before[name] = time.perf_counter() - began
        before_metrics.update({f"{name}_{k}": v for k, v in measured.items()})
    m = candidate.metrics
    after_metrics = {f"{name}_{k}": m[f"{prefix}_{k}"] for name, prefix in (("serving", "current"),
                                                                           ("candidate", "candidate"))
                     for k in ("nDCG@10", "MRR@10")}
    return FlywheelRun(len(events), chunks, index_s, len(pairs), len(judged), retrain_s, rollout_s,
                       retrain_s + rollout_s, dict(candidate.lineage["phase_seconds"]), before, after_metrics,
                       before_metrics, updates[-1].status)


def print_flywheel(run: FlywheelRun, console: Console) -> None:
    phases = {p: run.phases.get(p, 0.0) for p in PHASES}
    before = {"load": phases["load"], "index": 0.0, "evaluate-serving": run.before["serving"],
              "fine-tune": phases["fine-tune"], "export": phases["export"], "embed-candidate": 0.0,
              "evaluate-candidate": run.before["candidate"]}
    table = Table(title=f"gristmill bench flywheel: retrain phases ({run.pairs:,} pairs, {run.held_out} held-out "
                        f"queries, {run.documents:,} documents, {run.chunks:,} chunks)")
    for column in ("phase", "before: whole documents, PyTorch", "after: the index's chunks, ONNX", "ratio"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    notes = {"load": " (same step)", "fine-tune": " (same step)", "export": " (same step)"}
    for phase in PHASES:
        b, a = before[phase], phases[phase]
        table.add_row(phase + notes.get(phase, ""), f"{b:.1f} s" if b else "-", f"{a:.1f} s",
                      f"{a / b:.2f}x" if b and phase not in notes else "")
    evaluation_before = before["evaluate-serving"] + before["evaluate-candidate"]
    evaluation_after = sum(phases[p] for p in ("index", "evaluate-serving", "embed-candidate", "evaluate-candidate"))
    table.add_row("evaluation (all of it)", f"{evaluation_before:.1f} s", f"{evaluation_after:.1f} s",
                  f"{evaluation_after / evaluation_before:.2f}x" if evaluation_before else "")
    total_before, total_after = sum(before.values()), sum(phases.values())
    table.add_row("retrain (child, all phases)", f"{total_before:.1f} s", f"{total_after:.1f} s",
                  f"{total_after / total_before:.2f}x" if total_before else "")
    console.print(table)

    gate = Table(title="what the gate measured (held-out queries)")
    for column in ("measure", "serving", "candidate", "gain"):
        gate.add_column(column, justify="left" if column == "measure" else "right")
    for label, metrics in (("before: whole documents, cosine", run.before_metrics),
                           ("after: as served (chunks, best per document, serving mode)", run.after_metrics)):
        for k in ("nDCG@10", "MRR@10"):
            s, c = metrics[f"serving_{k}"], metrics[f"candidate_{k}"]
            gate.add_row(f"{label} {k}", f"{s:.4f}", f"{c:.4f}", f"{c - s:+.4f}")
    console.print(gate)

    flow = Table(title="from feedback to a served model")
    for column in ("measure", "value", "baseline", "ratio"):
        flow.add_column(column, justify="left" if column == "measure" else "right")
    flow.add_row(f"retrain (request -> {run.decision} candidate registered)", f"{run.retrain_s:.1f} s", "", "")
    flow.add_row(f"rollout of {run.chunks:,} chunks vs first indexing", f"{run.rollout_s:.1f} s",
                 f"{run.index_s:.1f} s", f"{run.rollout_s / run.index_s:.2f}x")
    flow.add_row("feedback -> served (retrain + rollout)", f"{run.feedback_to_served_s:.1f} s", "", "")
    console.print(flow)


def run_flywheel_bench(settings: Settings, pairs: int, documents: int, console: Console) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="gristmill-bench-flywheel-"))
    try:
        run = run_flywheel(settings, pairs, documents, scratch, console)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print_flywheel(run, console)
