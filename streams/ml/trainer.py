"""The trainer: turns a `retrain` request into a registered candidate and a promote/reject decision.

Training itself runs in a child process (`python -m streams.ml.training`), so the worker's event loop, memory
and threads are never touched by it; a failed or killed run is retried, and nothing serving changes until a
promoted version is rolled out by the rollout agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from schemas import ModelUpdate, RetrainRequest, document_content
from schemas.errors import GristmillError
from streams import metrics
from streams.ml.training import CANDIDATE_DIR, Hyperparameters, TrainingJob, TrainingResult
from streams.settings import Settings
from streams.state.errors import UnknownModelVersion
from streams.state.registry import ModelRegistry, ModelVersion
from streams.state.store import DocumentState
from streams.state.training_pairs import TrainingPair, TrainingPairs

log = logging.getLogger(__name__)


class TrainingFailed(GristmillError):
    """Every attempt of a training run failed."""


@dataclass
class TrainerStatus:
    """Shown by `/health`, `gristmill status` and the dashboard."""

    state: str = "idle"  # idle, training
    pid: int | None = None
    attempt: int = 0
    reason: str | None = None
    started_at: float | None = None
    last: dict[str, object] = field(default_factory=dict)


def feedback_offsets(pairs: Sequence[TrainingPair]) -> dict[str, list[int]]:
    """`{"topic/partition": [first, last]}` of the feedback records behind `pairs` (lineage)."""
    spans: dict[str, list[int]] = {}
    for pair in pairs:
        where, _, offset = pair.feedback_offset.rpartition("@")
        if not where or not offset.isdigit():
            continue
        span = spans.setdefault(where, [int(offset), int(offset)])
        span[0], span[1] = min(span[0], int(offset)), max(span[1], int(offset))
    return spans


class Trainer:
    def __init__(self, settings: Settings, registry: ModelRegistry, pairs: TrainingPairs,
                 documents: Callable[[], list[DocumentState]], child_setup: Callable[[], None] | None = None) -> None:
        """`documents` reads the serving index's ledger; `child_setup` runs in the training child before it starts
        (the worker passes one that ties the child's life to its own)."""
        self.settings = settings
        self.registry = registry
        self.pairs = pairs
        self.documents = documents
        self.child_setup = child_setup
        self.status = TrainerStatus()
        self.work_dir = settings.data_dir / "training"

    def covered(self, request: RetrainRequest) -> bool:
        """A request made before the pairs of the last finished run were read adds nothing to that run."""
        runs = self.pairs.trainings()
        return bool(runs) and request.requested_at.timestamp() <= max(r["snapshot_at"] for r in runs)

    async def handle(self, request: RetrainRequest) -> list[ModelUpdate]:
        """Train, register and decide; the returned updates go to `model-updates` in order."""
        if self.covered(request):
            log.info("retrain (%s) requested at %s is covered by an earlier run", request.reason, request.requested_at)
            return []
        snapshot_at = time.time()
        loop = asyncio.get_running_loop()
        pairs = await loop.run_in_executor(None, self.pairs.pairs)
        positives = sum(p.kind == "positive" for p in pairs)
        if positives < self.settings.trainer_min_positive_pairs:
            reason = f"{positives} positive pairs < trainer_min_positive_pairs " \
                     f"{self.settings.trainer_min_positive_pairs}"
            log.info("retrain (%s) skipped: %s", request.reason, reason)
            self.pairs.record_training(snapshot_at, None, "skipped", reason)
            self.status.last = {"status": "skipped", "reason": reason, "at": time.time()}
            return []
        base = self.registry.current()
        assert base is not None, "the worker registers the base model before agents start"
        documents = await loop.run_in_executor(None, self.documents)
        corpus = {d.doc_id: document_content(d.title, d.text) for d in documents if not d.deleted}
        s = self.settings
        params = Hyperparameters(s.trainer_epochs, s.trainer_batch_size, s.trainer_learning_rate,
                                 held_out_fraction=s.trainer_held_out_fraction)
        job = TrainingJob(base.version, base.source, [asdict(p) for p in pairs], corpus, params)
        job_dir = self.work_dir / f"job-{int(snapshot_at * 1000)}"
        try:
            await loop.run_in_executor(None, job.write, job_dir)
            result = await self._run(job_dir, request.reason)
            updates = self._register_and_decide(job_dir, base, result, pairs, params, request, snapshot_at)
        except TrainingFailed as exc:
            updates = [ModelUpdate(version=self.registry.next_version(), uri="", status="failed", reason=str(exc),
                                   previous_version=base.version, at=datetime.now(UTC))]
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)
        last = updates[-1]
        self.pairs.record_training(snapshot_at, last.version, last.status, last.reason)
        self.status.last = {"version": last.version, "status": last.status, "reason": last.reason,
                            "metrics": last.metrics, "at": time.time()}
        return updates

    async def _run(self, job_dir: Path, reason: str) -> TrainingResult:
        """Run the job in a child process, retrying a failed or killed run; the child dies with the worker."""
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.status = TrainerStatus("training", reason=reason, started_at=time.time(), last=self.status.last)
        metrics.TRAINING_RUNNING.set(1)
        started = time.perf_counter()
        try:
            for attempt in range(1, self.settings.trainer_attempts + 1):
                self.status.attempt = attempt
                log_path = job_dir / f"attempt-{attempt}.log"
                with open(log_path, "wb") as output:
                    child = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "streams.ml.training", str(job_dir), stdout=output,
                        stderr=asyncio.subprocess.STDOUT, env=env, preexec_fn=self.child_setup)
                    self.status.pid = child.pid
                    try:
                        code: int | str = await asyncio.wait_for(child.wait(), self.settings.trainer_timeout_s)
                    except TimeoutError:
                        child.kill()
                        await child.wait()
                        code = f"timeout after {self.settings.trainer_timeout_s:.0f}s"
                    except BaseException:  # the worker stops: the child must not outlive the run
                        child.kill()
                        await child.wait()
                        raise
                if code == 0:
                    metrics.TRAINING_SECONDS.observe(time.perf_counter() - started)
                    return TrainingResult.read(job_dir)
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
                log.warning("training attempt %d/%d exited with %s:\n%s", attempt, self.settings.trainer_attempts,
                            code, tail)
                if attempt < self.settings.trainer_attempts:
                    await asyncio.sleep(min(30.0, 2.0 ** attempt))
            raise TrainingFailed(f"training failed {self.settings.trainer_attempts} times; last exit code {code}")
        finally:
            metrics.TRAINING_RUNNING.set(0)
            self.status.state, self.status.pid = "idle", None

    def _register_and_decide(self, job_dir: Path, base: ModelVersion, result: TrainingResult,
                             pairs: Sequence[TrainingPair], params: Hyperparameters, request: RetrainRequest,
                             snapshot_at: float) -> list[ModelUpdate]:
        version = self.registry.next_version()
        scores = {**{f"current_{k}": v for k, v in result.current.items()},
                  **{f"candidate_{k}": v for k, v in result.candidate.items()},
                  "held_out_queries": float(result.held_out_queries), "train_pairs": float(result.train_pairs),
                  "train_seconds": result.train_seconds, "total_seconds": result.total_seconds}
        offsets = feedback_offsets(pairs)
        lineage = {"base_version": base.version, "reason": request.reason, "feedback_offsets": offsets,
                   "pairs": len(pairs), "hyperparameters": asdict(params), "snapshot_at": snapshot_at,
                   "trained_at": time.time(), "train_seconds": result.train_seconds}
        model = self.registry.register(job_dir / CANDIDATE_DIR, source=str(self.registry.root / version / "st"),
                                       facts={"dim": result.dim, "max_tokens": result.max_tokens},
                                       metrics=scores, lineage=lineage, version=version)
        metrics.CANDIDATE_NDCG.labels("current").set(result.current["nDCG@10"])
        metrics.CANDIDATE_NDCG.labels("candidate").set(result.candidate["nDCG@10"])
        trained_on = {"pairs": len(pairs), "queries": result.train_queries, "feedback_offsets": offsets}
        now = datetime.now(UTC)
        common = {"version": version, "uri": model.path.as_uri(), "metrics": scores, "trained_on": trained_on,
                  "previous_version": base.version}
        updates = [ModelUpdate(status="candidate", at=now, **common)]  # type: ignore[arg-type]
        gain = result.candidate["nDCG@10"] - result.current["nDCG@10"]
        margin = self.settings.promotion_margin
        if result.held_out_queries < self.settings.trainer_min_held_out_queries:
            reason = (f"{result.held_out_queries} held-out queries < trainer_min_held_out_queries "
                      f"{self.settings.trainer_min_held_out_queries}")
            updates.append(ModelUpdate(status="rejected", reason=reason, at=now, **common))  # type: ignore[arg-type]
        elif gain < margin:
            reason = (f"held-out nDCG@10 {result.candidate['nDCG@10']:.4f} vs serving "
                      f"{result.current['nDCG@10']:.4f}: gain {gain:+.4f} < margin {margin}")
            updates.append(ModelUpdate(status="rejected", reason=reason, at=now, **common))  # type: ignore[arg-type]
        else:
            reason = f"held-out nDCG@10 +{gain:.4f} (margin {margin})"
            updates.append(ModelUpdate(status="promoted", reason=reason, at=now, **common))  # type: ignore[arg-type]
        log.info("candidate %s %s: %s", version, updates[-1].status, reason)
        return updates


def rollback_update(registry: ModelRegistry) -> ModelUpdate:
    """The `model-updates` record that returns serving to the version before the current one
    (`NothingToRollBack` when only one version has ever served)."""
    current, previous = registry.current(), registry.previous()
    target = registry.get(previous)
    return ModelUpdate(version=previous, uri=target.path.as_uri(), status="rolled_back", metrics=target.metrics,
                       reason=f"rollback from {current.version if current else None}",
                       previous_version=current.version if current else None,
                       at=datetime.now(UTC))


def promote_update(registry: ModelRegistry, version: str, reason: str) -> ModelUpdate:
    """An operator's promotion of a registered version (e.g. a rejected candidate), bypassing the margin
    (`UnknownModelVersion` if it is not registered)."""
    model = registry.get(version)
    current = registry.current()
    return ModelUpdate(version=version, uri=model.path.as_uri(), status="promoted", metrics=model.metrics,
                       reason=reason, previous_version=current.version if current else None, at=datetime.now(UTC))


def reindex_update(registry: ModelRegistry, staging_root: Path) -> ModelUpdate:
    """The `model-updates` record that rebuilds the serving index into a new collection: the serving model is
    registered again as the next version (same files, lineage `reindex_of`) and promoted, so the rollout re-embeds
    every document into a collection with today's layout (dense and BM25 sparse vectors) while serving goes on."""
    current = registry.current()
    if current is None:
        raise UnknownModelVersion("no model serves yet: nothing to reindex")
    staging = Path(tempfile.mkdtemp(prefix=".reindex-", dir=staging_root))
    try:
        shutil.copytree(current.path, staging, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("manifest.json", "model.int8.onnx"))
        model = registry.register(staging, source=current.source, facts={"dim": current.dim,
                                                                         "max_tokens": current.max_tokens},
                                  metrics=current.metrics, lineage={**current.lineage, "reindex_of": current.version})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ModelUpdate(version=model.version, uri=model.path.as_uri(), status="promoted", metrics=model.metrics,
                       reason=f"reindex of {current.version}: the same model, a collection with today's layout",
                       previous_version=current.version, at=datetime.now(UTC))
