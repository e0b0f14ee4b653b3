"""The state one worker shares between its agents, its HTTP API and its dashboard, made once before any agent
registers: agents read it and act on it; none of them adds to it."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from schemas import QualityReport
from streams.answering import ActiveExperiment, Answering, ShadowRunner
from streams.index_changes import IndexChanges
from streams.ml.serving import (
    ChallengerPairs,
    PairOpener,
    ServingSlot,
    onnx_pairs,
    open_registry,
    open_store,
)
from streams.ml.trainer import ServingIndex, Trainer
from streams.processing import AgentHealth, DeadLetterSink, Outbox
from streams.settings import Settings
from streams.sources.mapper import SourceContract
from streams.sources.mapping import configured_sources
from streams.sources.registry import registry_client
from streams.state.evaluation_store import EvaluationStore
from streams.state.query_log import QueryLog
from streams.state.registry import ModelRegistry, ensure_base_model
from streams.state.training_pairs import TrainingPairs
from streams.state_databases import open_state_database
from streams.store_threads import StoreThreads


@dataclass
class Shared:
    settings: Settings
    registry: ModelRegistry
    serving: ServingSlot  # the (model, index) pair that answers, swapped by rollouts
    threads: StoreThreads  # the store-writer thread and the search threads
    query_log: QueryLog  # every answered query (feedback joins it)
    pairs: TrainingPairs  # feedback waiting for its query, training pairs, retrain history
    trainer: Trainer  # its status is shown whether or not this worker trains
    dead_letters: DeadLetterSink
    health: AgentHealth  # agent crashes and completed batches (`/health` says degraded while one crash-loops)
    evaluation: EvaluationStore  # answers per arm, judgements, offline metrics, experiments
    answering: Answering  # answers queries as the live experiment routes them
    index_changes: IndexChanges  # this worker's index writes told to the others, theirs applied to its caches
    sources: list[SourceContract] = field(default_factory=list)  # topics of other shapes, mapped to documents
    quality: dict[str, QualityReport] = field(default_factory=dict)  # the latest quality report of each topic

    @classmethod
    def open(cls, settings: Settings, outbox: Outbox, *, stopping: Callable[[], bool] = lambda: False,
             registry: ModelRegistry | None = None, opener: PairOpener | None = None,
             child_setup: Callable[[], None] | None = None) -> Shared:
        """Open everything a worker needs: the serving version's pair (exporting the base model the first time),
        the query log and feedback databases. `registry` and `opener` default to the configured registry and
        ONNX + Qdrant pairs (tests pass doubles)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        registry_of_schemas = registry_client(settings)
        sources = configured_sources(settings.sources_file, settings.namespace,  # a bad file stops the start here
                                     registry=registry_of_schemas is not None)
        threads = StoreThreads(settings.store_retry_max_s, stopping)
        if registry is None:
            local = open_registry(settings)
            model, registry = ensure_base_model(local), local
        else:
            model = registry.current()  # type: ignore[assignment]
            assert model is not None, "a registry passed in must have a serving version"
        slot = ServingSlot(registry, model, opener or onnx_pairs(settings), settings.rollout_retire_after_s,
                           closer=lambda pair: threads.submit_write(pair.close),
                           challengers=None if opener else ChallengerPairs(settings))
        pairs = TrainingPairs(open_state_database(settings, "feedback state"))

        def serving_index() -> ServingIndex:
            """The ledger and chunks of the serving version's index (a trainer-only process does not roll out
            itself, so the registry's serving version may not be the pair this worker has open)."""
            current, pair = registry.current(), slot.current
            if current is None or current.version == pair.model.version or settings.keeps_index_copy:
                # (a copy of the index is never opened twice: one writer per embedded shard)
                return ServingIndex(pair.store.all_documents(), pair.store.all_chunks(with_vectors=True),
                                    frozenset(pair.store.modes), pair.model.version)
            store = open_store(settings, current.dim, current.version)
            try:
                return ServingIndex(store.all_documents(), store.all_chunks(with_vectors=True),
                                    frozenset(store.modes), current.version)
            finally:
                store.close()

        trainer = Trainer(settings, registry, pairs, serving_index, child_setup, rollouts=slot, stopping=stopping,
                          state=threads.state)
        query_log = QueryLog(open_state_database(settings, "query log"), settings.query_log_text_chars)
        evaluation = EvaluationStore(open_state_database(settings, "evaluation store"))
        trainer.evaluation = evaluation
        answering = Answering(slot, threads, evaluation, ActiveExperiment(evaluation, settings.model_name),
                              ShadowRunner(evaluation, settings.shadow_max_pending))
        worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        return cls(settings, registry, slot, threads, query_log, pairs, trainer,
                   DeadLetterSink(outbox, settings.deadletter_max_bytes), AgentHealth(), evaluation, answering,
                   IndexChanges(worker_id, slot), [SourceContract.of(m, registry_of_schemas) for m in sources])

    def close(self) -> None:
        self.threads.close()
        self.serving.close()
        self.query_log.close()
        self.answering.shadow.close()
        self.evaluation.close()
        self.pairs.close()
