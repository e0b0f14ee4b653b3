"""The trainer: turns a `retrain` request into a registered candidate and a promote/reject decision.

Training itself runs in a child process (`python -m streams.ml.training`) at a lower CPU priority, so the
worker's event loop, memory and threads are never touched by it and serving and ingest come first; a failed or
killed run is retried, and nothing serving changes until a promoted version is rolled out by the rollout agent.
A retrain that would start while a rollout runs (or while the version it last promoted waits for its rollout)
waits for it, then trains from the version that serves.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from schemas import ModelUpdate, RetrainRequest, document_content
from schemas.errors import GristmillError
from streams import metrics
from streams.ml.held_out import Ranking, write_snapshot
from streams.ml.training import CANDIDATE_DIR, Hyperparameters, TrainingJob, TrainingProgress, TrainingResult
from streams.settings import Settings
from streams.state.errors import OperationAborted, UnknownModelVersion
from streams.state.evaluation_store import EvaluationStore
from streams.state.registry import ModelRegistry, ModelVersion
from streams.state.store import ChunkPoint, DocumentState
from streams.state.training_pairs import TrainingPair, TrainingPairs

log = logging.getLogger(__name__)


#: Publishes a run's decisions to `model-updates` (the trainer agent's producer).
Publish = Callable[[list[ModelUpdate]], Awaitable[None]]


class TrainingFailed(GristmillError):
    """Every attempt of a training run failed."""


class TrainingStopped(OperationAborted):
    """The worker stopped while training: no further attempt, the request stays uncommitted and is re-delivered."""


@dataclass
class TrainerStatus:
    """Shown by `/health`, `gristmill status` and the dashboard."""

    state: str = "idle"  # idle, waiting (for a rollout), training
    pid: int | None = None
    attempt: int = 0
    reason: str | None = None
    started_at: float | None = None
    waiting_for: str | None = None  # the rollout a retrain waits for
    job_dir: str | None = None
    last: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ServingIndex:
    """What a training job reads of the serving index: the ledger, every chunk with its vector, and the query
    modes the collection answers."""

    documents: list[DocumentState]
    chunks: list[ChunkPoint]
    modes: frozenset[str]
    version: str | None = None  # the model version whose collection this is, when known


class Rollouts(Protocol):
    """What the trainer needs to know of rollouts (the serving slot answers it)."""

    def rollout_running(self) -> bool:
        """A rollout is copying the index now."""
        ...

    def rollout_failed(self, version: str) -> bool:
        """The latest rollout of `version` failed."""
        ...

    def serves(self, version: str) -> bool:
        """This process's index is `version`'s."""
        ...


class NoRollouts:
    """A trainer with no rollouts to wait for (a process that only trains, a test)."""

    def rollout_running(self) -> bool:
        return False

    def rollout_failed(self, version: str) -> bool:
        return False

    def serves(self, version: str) -> bool:
        return True


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


#: How long a training child killed by a signal waits for the worker's own stop to show (see `_stopped_meanwhile`).
STOP_SIGNAL_GRACE_S = 2.0
T = TypeVar("T")
#: Runs a feedback or evaluation store operation off the event loop (`StoreThreads.state`: retried while it fails).
StateCall = Callable[[Callable[[], T], str], Awaitable[T]]


async def run_once(operation: Callable[[], T], what: str) -> T:
    """A `StateCall` without retries (tests, tools)."""
    return await asyncio.get_running_loop().run_in_executor(None, operation)


class Trainer:
    def __init__(self, settings: Settings, registry: ModelRegistry, pairs: TrainingPairs,
                 index: Callable[[], ServingIndex], child_setup: Callable[[], None] | None = None,
                 rollouts: Rollouts | None = None, poll_s: float = 1.0,
                 stopping: Callable[[], bool] = lambda: False, state: StateCall | None = None) -> None:
        """`index` reads the serving index; `child_setup` runs in the training child before it starts (the worker
        passes one that ties the child's life to its own); `rollouts` tells whether a rollout runs or failed;
        `state` runs a feedback or evaluation store operation off the loop (the worker's retries it while the store
        is unavailable, so an outage pauses the retrain instead of failing it)."""
        self.settings = settings
        self.registry = registry
        self.pairs = pairs
        self.index = index
        self.child_setup = child_setup
        self.rollouts = rollouts or NoRollouts()
        self.stopping = stopping  # the worker is stopping: a killed training child is not retried
        self.state = state or run_once
        self.index_ready: Callable[[], bool] = lambda: True  # a copy of the index has caught up (`IndexReplica`)
        self.poll_s = poll_s
        self.status = TrainerStatus()
        self.work_dir = settings.data_dir / "training"
        self.awaiting: str | None = None  # the version this trainer promoted last, until it serves
        self.evaluation: EvaluationStore | None = None  # where each version's held-out metrics are kept too

    def snapshot(self) -> dict[str, object]:
        """The status with the running job's progress (phase, done of total, ETA) for `/health`."""
        progress = TrainingProgress.read(Path(self.status.job_dir)) if self.status.job_dir else None
        return {**asdict(self.status), "progress": progress.as_dict(time.time()) if progress else None}

    def _rollout_pending(self) -> str | None:
        """The rollout a retrain must wait for: one copying now, or the version promoted last until it serves."""
        if self.rollouts.rollout_running():
            return "a running rollout"
        if self.settings.keeps_index_copy and not self.index_ready():
            return "this process's index copy to read documents to the end"
        if self.settings.keeps_index_copy:  # the copy this trainer reads must be the serving version's
            current = self.registry.current()
            if current is not None and not self.rollouts.serves(current.version) and \
                    not self.rollouts.rollout_failed(current.version):
                return f"this process's index copy to reach {current.version}"
        if self.awaiting is not None:
            current = self.registry.current()
            if (current is not None and current.version == self.awaiting) or self.rollouts.rollout_failed(
                    self.awaiting):
                self.awaiting = None
            else:
                return f"the rollout of {self.awaiting}"
        return None

    async def wait_for_rollouts(self) -> None:
        """Wait (at most `trainer_rollout_wait_s`) while a rollout is running or pending, so that a retrain trains
        from the version that serves once it is done and does not compete with it for the CPU."""
        deadline = time.monotonic() + self.settings.trainer_rollout_wait_s
        while (pending := self._rollout_pending()) is not None:
            if time.monotonic() >= deadline:
                log.warning("retrain waited %.0fs for %s; training from the serving version now",
                            self.settings.trainer_rollout_wait_s, pending)
                self.awaiting = None
                break
            if self.status.state != "waiting":
                log.info("retrain waits for %s", pending)
            self.status.state, self.status.waiting_for = "waiting", pending
            await asyncio.sleep(self.poll_s)
        self.status.state, self.status.waiting_for = "idle", None

    def _child_setup(self) -> None:
        """In the training child, before it starts: the worker's setup, then a lower CPU priority."""
        if self.child_setup is not None:
            self.child_setup()
        if self.settings.trainer_nice:
            os.nice(self.settings.trainer_nice)

    def covered(self) -> bool:
        """Nothing changed in the pairs since the last finished run read them: a request adds nothing to it (counted
        by the pairs' change sequence, not by comparing the clocks of the requesting and the training hosts)."""
        runs = self.pairs.trainings()
        return bool(runs) and runs[-1]["pairs_sequence"] == self.pairs.sequence()

    def decided_before(self, request_at: str) -> list[ModelUpdate] | None:
        """The decisions of a run that answered this very request (its position in `retrain`) and was registered,
        but whose end was not recorded (a stop between publishing and recording): published again, not retrained."""
        for model in reversed(self.registry.versions()):
            decision = model.lineage.get("decision")
            if model.lineage.get("request") == request_at and isinstance(decision, dict):
                trained_on = {"pairs": int(model.lineage.get("pairs", 0)), "request": request_at,
                              "feedback_offsets": model.lineage.get("feedback_offsets", {})}
                return decision_updates(model, model.metrics, trained_on, model.lineage.get("base_version"),
                                        decision["status"], decision["reason"])
        return None

    async def handle(self, request: RetrainRequest, request_at: str | None = None,
                     publish: Publish | None = None) -> list[ModelUpdate]:
        """Train, register and decide; the returned updates go to `model-updates` in order. With `publish`, they are
        published before the run is recorded as finished, so a stop in between re-delivers the request and the same
        decisions are published again (found by `request_at`, the request's position), never lost."""
        loop = asyncio.get_running_loop()
        if request_at is not None and (again := await self.state(lambda: self.decided_before(request_at),
                                                                 "training history")):
            log.info("retrain at %s was decided before (%s %s): publishing the decision again", request_at,
                     again[-1].status, again[-1].version)
            return await self._finish(again, publish, time.time(), await self.state(self.pairs.sequence,
                                                                                    "training pairs"))
        if await self.state(self.covered, "training history"):
            log.info("retrain (%s) at %s is covered by an earlier run: no pair changed since", request.reason,
                     request_at)
            return []
        snapshot_at = time.time()
        sequence = await self.state(self.pairs.sequence, "training pairs")
        pairs = await self.state(self.pairs.pairs, "training pairs")
        positives = sum(p.kind == "positive" for p in pairs)
        if positives < self.settings.trainer_min_positive_pairs:
            reason = f"{positives} positive pairs < trainer_min_positive_pairs " \
                     f"{self.settings.trainer_min_positive_pairs}"
            log.info("retrain (%s) skipped: %s", request.reason, reason)
            await self.state(lambda: self.pairs.record_training(snapshot_at, None, "skipped", reason, sequence),
                             "training history")
            self.status.last = {"status": "skipped", "reason": reason, "at": time.time()}
            return []
        await self.wait_for_rollouts()
        base = self.registry.current()
        assert base is not None, "the worker registers the base model before agents start"
        index = await loop.run_in_executor(None, self.index)
        if index.version is not None and index.version != base.version:  # an index copy that is not current's
            log.warning("retrain trains from %s, the version of the index it reads (%s serves)", index.version,
                        base.version)
            base = self.registry.get(index.version)
        corpus = {d.doc_id: document_content(d.title, d.text) for d in index.documents if not d.deleted}
        s = self.settings
        params = Hyperparameters(s.trainer_epochs, s.trainer_batch_size, s.trainer_learning_rate,
                                 held_out_fraction=s.trainer_held_out_fraction)
        job = TrainingJob(base.version, base.source, str(base.path), [asdict(p) for p in pairs], corpus,
                          Ranking.of(s, index.modes).as_dict(), params)
        job_dir = self.work_dir / f"job-{int(snapshot_at * 1000)}"

        def write_job(chunks: list[ChunkPoint]) -> None:
            job.write(job_dir)
            write_snapshot(job_dir, chunks)
            chunks.clear()  # the job holds them now, not the worker's memory during training

        try:
            await loop.run_in_executor(None, write_job, index.chunks)
            result = await self._run(job_dir, request.reason)
            # on the loop, not a thread: a stop must not remove the job directory under a registration
            updates = self._register_and_decide(job_dir, base, result, pairs, params, request, snapshot_at,
                                                request_at)
            if self.evaluation is not None:
                await self.state(lambda: self.record_offline(updates[-1].version, result), "evaluation store")
        except TrainingFailed as exc:
            updates = [ModelUpdate(version=self.registry.next_version(), uri="", status="failed", reason=str(exc),
                                   previous_version=base.version, at=datetime.now(UTC))]
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)
        return await self._finish(updates, publish, snapshot_at, sequence)

    async def _finish(self, updates: list[ModelUpdate], publish: Publish | None, snapshot_at: float,
                      sequence: int) -> list[ModelUpdate]:
        """Publish the decisions (when a publisher is given), then record the run as finished."""
        if publish is not None:
            await publish(updates)
        last = updates[-1]
        if last.status == "promoted":
            self.awaiting = last.version  # the next retrain trains from it, once it serves
        await self.state(lambda: self.pairs.record_training(snapshot_at, last.version, last.status, last.reason,
                                                            sequence), "training history")
        self.status.last = {"version": last.version, "status": last.status, "reason": last.reason,
                            "metrics": last.metrics, "at": time.time()}
        return updates

    async def _run(self, job_dir: Path, reason: str) -> TrainingResult:
        """Run the job in a child process, retrying a failed or killed run; the child dies with the worker."""
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.status = TrainerStatus("training", reason=reason, started_at=time.time(), job_dir=str(job_dir),
                                    last=self.status.last)
        metrics.TRAINING_RUNNING.set(1)
        started = time.perf_counter()
        try:
            for attempt in range(1, self.settings.trainer_attempts + 1):
                self.status.attempt = attempt
                log_path = job_dir / f"attempt-{attempt}.log"
                with open(log_path, "wb") as output:
                    child = await asyncio.create_subprocess_exec(
                        sys.executable, "-m", "streams.ml.training", str(job_dir), stdout=output,
                        stderr=asyncio.subprocess.STDOUT, env=env, preexec_fn=self._child_setup)
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
                if await self._stopped_meanwhile(code):  # killed by the stop (a signal to the process group)
                    raise TrainingStopped(f"training attempt {attempt} ended ({code}) as the worker stops")
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
                log.warning("training attempt %d/%d exited with %s:\n%s", attempt, self.settings.trainer_attempts,
                            code, tail)
                if attempt < self.settings.trainer_attempts:
                    await asyncio.sleep(min(30.0, 2.0 ** attempt))
                    if self.stopping():
                        raise TrainingStopped(f"the worker stops before training attempt {attempt + 1}")
            raise TrainingFailed(f"training failed {self.settings.trainer_attempts} times; last exit code {code}")
        finally:
            metrics.TRAINING_RUNNING.set(0)
            self.status.state, self.status.pid, self.status.job_dir = "idle", None, None

    async def _stopped_meanwhile(self, code: int | str) -> bool:
        """Whether a training child that ended with `code` was ended by the worker's stop. A signal to the whole
        process group reaches the child and the worker at once, and the child may be reaped before the worker has
        begun to stop: a child killed by a signal gets a moment for the stop to show."""
        deadline = time.monotonic() + (STOP_SIGNAL_GRACE_S if isinstance(code, int) and code < 0 else 0.0)
        while not self.stopping() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.stopping()

    def _register_and_decide(self, job_dir: Path, base: ModelVersion, result: TrainingResult,
                             pairs: Sequence[TrainingPair], params: Hyperparameters, request: RetrainRequest,
                             snapshot_at: float, request_at: str | None = None) -> list[ModelUpdate]:
        version = self.registry.next_version()
        status, reason = self._decide(result)
        scores = {**{f"current_{k}": v for k, v in result.current.items()},
                  **{f"candidate_{k}": v for k, v in result.candidate.items()},
                  "held_out_queries": float(result.held_out_queries), "train_pairs": float(result.train_pairs),
                  "held_out_index_chunks": float(result.index_chunks), "train_seconds": result.train_seconds,
                  "total_seconds": result.total_seconds}
        offsets = feedback_offsets(pairs)
        lineage = {"base_version": base.version, "reason": request.reason, "feedback_offsets": offsets,
                   "pairs": len(pairs), "hyperparameters": asdict(params), "snapshot_at": snapshot_at,
                   "trained_at": time.time(), "train_seconds": result.train_seconds,
                   "phase_seconds": result.phase_seconds, "request": request_at,
                   "decision": {"status": status, "reason": reason}}
        model = self.registry.register(job_dir / CANDIDATE_DIR, source=str(self.registry.root / version / "st"),
                                       facts={"dim": result.dim, "max_tokens": result.max_tokens},
                                       metrics=scores, lineage=lineage, version=version)
        metrics.CANDIDATE_NDCG.labels("current").set(result.current["nDCG@10"])
        metrics.CANDIDATE_NDCG.labels("candidate").set(result.candidate["nDCG@10"])
        trained_on: dict[str, object] = {"pairs": len(pairs), "queries": result.train_queries,
                                         "feedback_offsets": offsets}
        if request_at is not None:
            trained_on["request"] = request_at  # identifies the decision if it is ever published again
        log.info("candidate %s %s: %s", version, status, reason)
        return decision_updates(model, scores, trained_on, base.version, status, reason)

    def record_offline(self, version: str, result: TrainingResult) -> None:
        """The candidate's held-out metrics into the evaluation store (shown beside its online ones)."""
        assert self.evaluation is not None
        self.evaluation.record_offline(version, {
            "held_out_nDCG@10": result.candidate["nDCG@10"], "held_out_MRR@10": result.candidate["MRR@10"],
            "base_held_out_nDCG@10": result.current["nDCG@10"], "base_held_out_MRR@10": result.current["MRR@10"],
            "held_out_queries": float(result.held_out_queries)})

    def _decide(self, result: TrainingResult) -> tuple[str, str]:
        """Promoted or rejected, and why: the held-out gain against the promotion margin."""
        gain = result.candidate["nDCG@10"] - result.current["nDCG@10"]
        margin = self.settings.promotion_margin
        if result.held_out_queries < self.settings.trainer_min_held_out_queries:
            return "rejected", (f"{result.held_out_queries} held-out queries < trainer_min_held_out_queries "
                                f"{self.settings.trainer_min_held_out_queries}")
        if gain < margin:
            return "rejected", (f"held-out nDCG@10 {result.candidate['nDCG@10']:.4f} vs serving "
                                f"{result.current['nDCG@10']:.4f}: gain {gain:+.4f} < margin {margin}")
        return "promoted", f"held-out nDCG@10 +{gain:.4f} (margin {margin})"


def decision_updates(model: ModelVersion, scores: dict[str, float], trained_on: dict[str, object],
                     previous_version: str | None, status: str, reason: str) -> list[ModelUpdate]:
    """The `model-updates` records of a trained version: `candidate`, then its decision (promoted or rejected)."""
    common = {"version": model.version, "uri": model.path.as_uri(), "metrics": scores, "trained_on": trained_on,
              "previous_version": previous_version, "at": datetime.now(UTC)}
    return [ModelUpdate(status="candidate", **common),  # type: ignore[arg-type]
            ModelUpdate(status=status, reason=reason, **common)]  # type: ignore[arg-type]


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
    (`UnknownModelVersion` if it is not registered). It names a target, not a change from what serves: applied in
    the log's order whatever serves then (no `previous_version` to compare), so of two promotions sent one after the
    other the second wins even if the first was not rolled out yet."""
    model = registry.get(version)
    current = registry.current()
    return ModelUpdate(version=version, uri=model.path.as_uri(), status="promoted", metrics=model.metrics,
                       reason=f"{reason} ({current.version if current else 'nothing'} served when it was asked)",
                       at=datetime.now(UTC))


def reindex_update(registry: ModelRegistry, staging_root: Path) -> ModelUpdate:
    """The `model-updates` record that rebuilds the serving index into a new collection: the serving model is
    registered again as the next version (same files, lineage `reindex_of`; not the vectors its trainer shipped) and
    promoted, so the rollout re-embeds every document into a collection with today's layout (dense and BM25 sparse
    vectors) while serving goes on."""
    current = registry.current()
    if current is None:
        raise UnknownModelVersion("no model serves yet: nothing to reindex")
    staging = Path(tempfile.mkdtemp(prefix=".reindex-", dir=staging_root))
    try:
        shutil.copytree(current.path, staging, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("manifest.json", "model.int8.onnx", "chunk-*"))
        model = registry.register(staging, source=current.source, facts={"dim": current.dim,
                                                                         "max_tokens": current.max_tokens},
                                  metrics=current.metrics, lineage={**current.lineage, "reindex_of": current.version})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ModelUpdate(version=model.version, uri=model.path.as_uri(), status="promoted", metrics=model.metrics,
                       reason=f"reindex of {current.version}: the same model, a collection with today's layout",
                       previous_version=current.version, at=datetime.now(UTC))
