"""Prometheus metrics of every stage (prometheus-client, default registry, served at `/metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 300)

RECORDS_IN = Counter("gristmill_records_in_total", "Records consumed", ["topic"])
RECORDS_VALID = Counter("gristmill_records_valid_total", "Records that passed validation", ["topic"])
RECORDS_INVALID = Counter("gristmill_records_invalid_total", "Records dead-lettered, by first reason",
                          ["topic", "reason"])
MONITOR_RECORDS_UNJUDGED = Counter("gristmill_monitor_records_unjudged_total", "Records the monitor could not judge "
                                   "(a source's schema not fetched yet)", ["topic"])
SOURCE_RECORDS = Counter("gristmill_source_records_total", "Records of a source topic: mapped to a document event, "
                         "skipped (a tombstone after a delete), or dead-lettered", ["source", "outcome"])
DEADLETTERS_OUT = Counter("gristmill_deadletters_total", "Records written to the dead-letter topic", ["topic"])
RECORDS_FAILED = Counter("gristmill_records_failed_total", "Valid records whose processing raised (dead-lettered "
                         "alone, their batch-mates applied), by exception type", ["topic", "exception"])
AGENT_CRASHES = Counter("gristmill_agent_crashes_total", "Exceptions that escaped an agent's batch loop (the "
                        "agent restarts; its batch is re-delivered)", ["agent"])
AGENTS = ("ingest", "query", "feedback", "monitor", "trainer", "rollout", "experiment")

BATCH_RECORDS = Histogram("gristmill_batch_records", "Records per micro-batch", ["agent"],
                          buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
DOCS_APPLIED = Counter("gristmill_documents_total", "Document events applied, by outcome", ["outcome"])
CHUNKS_UPSERTED = Counter("gristmill_chunks_upserted_total", "Chunks written (embedded, or keeping their vectors)")
CHUNKS_EMBEDDED = Counter("gristmill_chunks_embedded_total", "Chunks that went through the encoder to be indexed (an "
                          "edit keeps the vectors of the chunks whose text it did not change)")
EMBEDDING_CACHE_HITS = Counter("gristmill_embedding_cache_hits_total", "Distinct chunk texts of an ingest batch "
                               "whose vectors the process's embedding cache held (GRISTMILL_EMBEDDING_CACHE_BYTES)")
ENCODE_SECONDS = Histogram("gristmill_encode_seconds", "Encoder time per batch", ["agent"],
                           buckets=LATENCY_BUCKETS)
STORE_WRITE_SECONDS = Histogram("gristmill_store_write_seconds", "Vector store write time per batch",
                                buckets=LATENCY_BUCKETS)
TIMER_FAILURES = Counter("gristmill_timer_failures_total", "Periodic tasks that failed (not on a store outage); "
                         "the next tick runs anyway", ["timer"])
STORE_FAILURES = Counter("gristmill_store_failures_total", "Vector store operations that failed and were retried")
STORE_UP = Gauge("gristmill_store_up", "0 while an operation on a store (vector store or state) is being retried")
CACHE_INVALIDATIONS = Counter("gristmill_cache_invalidations_total", "Query caches dropped because indexed documents "
                              "changed: by this worker's writes (local) or another worker's (remote)", ["cause"])
STORE_FAILING = Gauge("gristmill_store_failing", "1 while operations on this store fail and are retried (vector "
                      "store, query log, feedback state, evaluation store)", ["store"])
STORE_COMPACT_SECONDS = Histogram("gristmill_store_compact_seconds", "Time the embedded store spent vacuuming "
                                  "deleted points (index writes wait meanwhile)", buckets=LATENCY_BUCKETS)
STAGE_SECONDS = Counter("gristmill_stage_seconds_total", "Seconds spent per stage of the ingest path: idle (waits "
                        "of over a second for a batch), fetch (shorter waits), validate, queue (for the writer "
                        "thread), read, chunk, encode, sparse, write, ledger, commit, monitor", ["stage"])
INGEST_STAGES = ("idle", "fetch", "validate", "queue", "read", "chunk", "encode", "sparse", "write", "ledger",
                 "commit", "monitor")
FRESHNESS_SECONDS = Histogram("gristmill_freshness_seconds", "Event produced -> searchable",
                              buckets=FRESHNESS_BUCKETS)

INDEX_CHUNKS = Gauge("gristmill_index_chunks", "Chunks in the serving index")
INDEX_DOCUMENTS = Gauge("gristmill_index_documents", "Live documents in the serving index")
MODEL = Info("gristmill_model", "Serving model")

QUERIES = Counter("gristmill_queries_total", "Queries answered", ["via"])
QUERY_CACHE = Counter("gristmill_query_cache_total", "Query cache lookups by result (hit ratio = hit / all)",
                      ["result"])
QUERY_LATENCY_SECONDS = Histogram("gristmill_query_latency_seconds", "Query received -> answer ready", ["via"],
                                  buckets=LATENCY_BUCKETS)
QUERY_LOG_SIZE = Gauge("gristmill_query_log_entries", "Query/response pairs kept in the query log")

GX_SECONDS = Histogram("gristmill_gx_seconds", "Great Expectations suite time per window", ["topic"],
                       buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
GX_FAILURES = Counter("gristmill_gx_failed_expectations_total", "Failed expectations", ["topic", "expectation"])
QUALITY_WINDOWS = Counter("gristmill_quality_windows_total", "Windows checked, by suite success", ["topic", "success"])
MONITOR_LAG_SECONDS = Gauge("gristmill_monitor_lag_seconds", "Last record of a window -> its report", ["topic"])
MONITOR_WINDOWS_SKIPPED = Counter("gristmill_monitor_windows_skipped_total", "Closed windows not evaluated: "
                                  "too many were waiting (the monitor falls behind the streams)", ["topic"])
DRIFT_SCORE = Gauge("gristmill_drift_score", "Latest drift statistic vs the reference window", ["topic", "statistic"])
ALERT = Gauge("gristmill_alert", "1 while an alert is raised", ["topic", "kind"])
RETRAIN_REQUESTS = Counter("gristmill_retrain_requests_total", "retrain events emitted", ["reason"])
MODEL_UPDATES = Counter("gristmill_model_updates_total", "model-updates records emitted, by status", ["status"])
DECISIONS_REFUSED = Counter("gristmill_model_decisions_refused_total", "Promotions and rollbacks on model-updates "
                            "not applied: replayed, republished, or overtaken by a later decision")
TRAINING_SECONDS = Histogram("gristmill_training_seconds", "Wall time of one training run (fine-tune, evaluate, "
                             "export)", buckets=(10, 30, 60, 120, 300, 600, 1200, 3600))
TRAINING_RUNNING = Gauge("gristmill_training_running", "1 while a training run is in progress")
CANDIDATE_NDCG = Gauge("gristmill_heldout_ndcg", "Held-out nDCG@10 of the latest evaluation", ["model"])
ROLLOUT_PROGRESS = Gauge("gristmill_rollout_progress_ratio", "Share of the index copied by the latest rollout")
ROLLOUT_SECONDS = Histogram("gristmill_rollout_seconds", "Wall time of one rollout (copy, catch-up, switch)",
                            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))

CONSUMER_LAG = Gauge("gristmill_consumer_lag", "High watermark - committed offset, per assigned partition",
                     ["topic", "partition"])


def initialize(topics: tuple[str, ...] = ("documents", "queries", "feedback")) -> None:
    """Create every known label combination at zero, so dashboards show 0 rather than 'no data'."""
    for topic in topics:
        for counter in (RECORDS_IN, RECORDS_VALID, DEADLETTERS_OUT):
            counter.labels(topic)
        GX_SECONDS.labels(topic)
        MONITOR_LAG_SECONDS.labels(topic)
        for success in ("true", "false"):
            QUALITY_WINDOWS.labels(topic, success)
        for kind in ("quality", "drift", "stale"):
            ALERT.labels(topic, kind)
    for agent in ("ingest", "query"):
        BATCH_RECORDS.labels(agent)
    for agent in AGENTS:
        AGENT_CRASHES.labels(agent)
    for stage in INGEST_STAGES:
        STAGE_SECONDS.labels(stage)
    for cause in ("local", "remote"):
        CACHE_INVALIDATIONS.labels(cause)
    ENCODE_SECONDS.labels("ingest")
    for outcome in ("embedded", "deleted", "unchanged", "stale"):
        DOCS_APPLIED.labels(outcome)
    for via in ("http", "kafka"):
        QUERIES.labels(via)
        QUERY_LATENCY_SECONDS.labels(via)
    for result in ("hit", "miss"):
        QUERY_CACHE.labels(result)
    for reason in ("feedback", "drift", "manual", "schedule"):
        RETRAIN_REQUESTS.labels(reason)
    for kind in ("positive", "negative"):
        TRAINING_PAIRS.labels(kind)
    for status in ("candidate", "promoted", "rejected", "rolled_back", "failed"):
        MODEL_UPDATES.labels(status)
    for model in ("current", "candidate"):
        CANDIDATE_NDCG.labels(model)
    for topic, statistics in DRIFT_STATISTICS.items():
        for statistic in (*statistics, "invalid_share"):
            DRIFT_SCORE.labels(topic, statistic)


DRIFT_STATISTICS = {
    "queries": ("query_length_ks", "query_mean_shift", "query_mmd"),
    "documents": ("document_length_ks", "document_source_tv"),
    "feedback": ("feedback_positive_shift",),
}

TRAINING_PAIRS = Counter("gristmill_training_pairs_total", "Training pairs built from feedback", ["kind"])
FEEDBACK_WAITING = Gauge("gristmill_feedback_waiting", "Feedback records waiting for their query's response")

ONLINE_QUERIES = Gauge("gristmill_online_queries", "Answered queries in the last evaluation window, per version and "
                       "arm (slice: all or the query length bucket)", ["version", "arm", "slice"])
ONLINE_POSITIVE_RATE = Gauge("gristmill_online_positive_rate", "Share of judged queries with a positively judged "
                             "document in the top 10", ["version", "arm", "slice"])
ONLINE_MRR = Gauge("gristmill_online_mrr_at_10", "MRR@10 over judged queries", ["version", "arm", "slice"])
ONLINE_NDCG = Gauge("gristmill_online_ndcg_at_10", "nDCG@10 over judged queries", ["version", "arm", "slice"])
ONLINE_LATENCY_P99 = Gauge("gristmill_online_latency_p99_seconds", "Answer latency p99", ["version", "arm", "slice"])
SHADOW_SEARCHES = Counter("gristmill_shadow_searches_total", "Shadow searches, by outcome (answered, skipped when "
                          "too many wait, failed)", ["outcome"])
EXPERIMENT_RUNNING = Gauge("gristmill_experiment_running", "1 while an experiment runs, by mode", ["mode"])
EXPERIMENT_DECISIONS = Counter("gristmill_experiment_decisions_total", "Experiment decisions", ["action"])
