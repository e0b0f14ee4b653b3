"""One typed settings object for the whole pipeline (env `GRISTMILL_*`, `KAFKA_BOOTSTRAP_SERVERS`, `QDRANT_URL`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.records import METADATA_KEY

#: The types a metadata key's payload index (and a GET search's value of it) may have.
METADATA_INDEX_TYPES = ("integer", "float", "keyword", "bool", "datetime")

class Settings(BaseSettings):
    """Every knob of gristmill; read once from the environment, passed explicitly everywhere."""

    model_config = SettingsConfigDict(env_prefix="GRISTMILL_", extra="ignore", frozen=True, hide_input_in_errors=True)

    # Where things live
    data_dir: Path = Field(default=Path(".gristmill"), description="State: shard, models, run files.")
    registry_dir: Path | None = Field(default=None, description="Model registry; default DATA_DIR/models.")

    # Kafka
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "GRISTMILL_KAFKA_BOOTSTRAP_SERVERS"),
        description="External Kafka; when unset `gristmill up` starts an embedded Tansu broker.",
    )
    broker_port: int = Field(default=0, ge=0, le=65535, description="Embedded broker port; 0 picks a free one.")
    namespace: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", description="Topic name prefix.")
    partitions: int = Field(default=4, ge=1, description="Partitions of every topic gristmill creates.")
    schema_registry_url: str | None = Field(default=None, description="Confluent schema registry of the sources in "
                                            "avro or json-schema format (mock:// is the in-memory one of tests).")
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    quality_suites_dir: Path | None = Field(default=None, description="Your own Great Expectations suites (JSON): "
                                            "one named as a topic replaces its default; `source:NAME` checks a source.")
    sources_file: Path | None = Field(default=None, description="YAML file of source mappings: topics of other "
                                      "shapes (Debezium, JSON rows) the ingest agent turns into documents.")
    replication_factor: int = Field(default=1, ge=1)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle that signed the brokers' certs.")
    kafka_ssl_certfile: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="Client key (mutual TLS).")
    session_timeout_s: float = Field(default=8.0, gt=0)
    in_flight_wait_s: float = Field(default=30.0, gt=0, description="Longest a rebalance waits for records in "
                                                                    "flight (they are re-delivered after).")
    stop_wait_s: float = Field(default=2.0, gt=0, description="Longest a stop waits for records in flight (the rest "
                               "is re-delivered after the restart; a batch being encoded stops early, unwritten).")
    producer_max_bytes: int = Field(default=1_000_000, ge=100_000, description="Largest record the worker "
                                    "produces (key, value and framing); the broker must accept it.")
    deadletter_max_bytes: int = Field(default=900_000, ge=10_000, description="Dead letters larger than this keep "
                                      "a prefix of the value (with its size and sha256).")
    fetch_idle_wait_ms: int = Field(default=500, ge=1, le=5000, description="Longest a fetch waits once no record "
                                    "came for a second (an idle worker and broker sleep; the first record after an "
                                    "idle stretch may wait this long).")
    fetch_max_wait_ms: int = Field(default=10, ge=1, le=5000, description="Longest a fetch waits while records flow "
                                                                          "(bounds the latency it adds).")

    # Vector store
    qdrant_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("QDRANT_URL", "GRISTMILL_QDRANT_URL"),
        description="Qdrant server; when unset an embedded qdrant-edge shard under DATA_DIR is used.",
    )
    qdrant_api_key: SecretStr | None = None
    qdrant_request_max_bytes: int = Field(
        default=8 * 1024 * 1024, ge=65_536,
        description="Largest upsert request sent to a Qdrant server (estimated JSON bytes); keep it below the "
                    "server's `service.max_request_size_mb` (32 MB by default) and any proxy's body limit. A point "
                    "larger than this fails its own record (dead letter), not the store.",
    )
    collection: str = Field(default="chunks", pattern=r"^[A-Za-z0-9_-]+$")
    metadata_indexes: str = Field(default="", description="Metadata keys filters read often, each with its type "
                                  "(`year:integer,lang:keyword,published:datetime`; types integer, float, keyword, "
                                  "bool, datetime): Qdrant keeps a payload index of each, and a GET search parses "
                                  "`metadata.<key>=` as that type (others are strings).")

    # HTTP
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=6066, ge=0, le=65535)
    admin_token: SecretStr | None = Field(default=None, description="Bearer token for admin HTTP actions; unset "
                                                                  "disables them.")
    api_keys_file: Path | None = Field(default=None, description="JSON file of API keys (name, principals, roles "
                                       "search/read/admin); set, every HTTP route but /, /health (status only), "
                                       "/metrics and /openapi.json needs a key. Re-read when it changes.")
    http_allow_open: bool = Field(default=False, description="Let `gristmill up` serve HTTP beyond loopback "
                                  "without GRISTMILL_API_KEYS_FILE (anyone who reaches it reads the query log).")
    api_key: SecretStr | None = Field(default=None, description="The CLI's API key, sent as a bearer token to the "
                                      "worker's HTTP API (GRISTMILL_API_KEY).")

    # Model and encoding
    model_name: str = "minilm"
    encode_batch_size: int = Field(default=32, ge=1, description="Texts per ONNX run at most.")
    encode_batch_tokens: int = Field(default=1024, ge=1, description="Padded tokens per ONNX run at most (texts "
                                     "run sorted by token count; raised on CUDA).")
    onnx_threads: int = Field(default=2, ge=1, description="ONNX Runtime intra-op threads.")
    int8: bool = Field(default=False, description="Dynamic int8 quantized encoder: faster, changes answers.")

    # Retrieval: dense, sparse (BM25) or both fused inside Qdrant
    sparse_vectors: bool = Field(default=True, description="New collections hold BM25 sparse vectors beside the "
                                 "dense ones (false: dense-only, as collections made before).")
    search_mode: Literal["dense", "sparse", "hybrid"] = Field(default="hybrid", description="Mode of a search "
                                                                                            "that names none.")
    search_fusion: Literal["rrf", "dbsf"] = Field(default="rrf", description="How hybrid fuses the two rankings.")
    search_candidates: int = Field(default=100, ge=1, le=10_000, description="Chunks each side of a hybrid search "
                                                                             "prefetches for the fusion.")
    rrf_k: int = Field(default=60, ge=1, description="Reciprocal rank fusion constant.")
    search_exact_first: bool = Field(default=True, description="A sparse or hybrid query holding identifier-like "
                                     "tokens (codes, error numbers, function names) ranks the fused candidates "
                                     "containing them verbatim first.")
    group_candidates: int = Field(default=4, ge=1, le=100, description="Chunks fetched per document asked for by "
                                                                        "a document-level search (more when needed).")
    bm25_k1: float = Field(default=1.2, gt=0, description="BM25 term-frequency saturation.")
    bm25_b: float = Field(default=0.75, ge=0, le=1, description="BM25 length normalization.")
    bm25_avg_len: float = Field(default=60.0, gt=0, description="Average chunk length (words) BM25 normalizes by; "
                                "60 is what sentence-cut 128-token chunks average on NFCorpus (dev: as good as 90 "
                                "in hybrid, better in sparse).")

    # Chunking
    chunk_tokens: int = Field(default=128, ge=16, description="Tokens per chunk (model max bounds it).")
    chunk_overlap: int = Field(default=32, ge=0, description="Tokens of the sentence before that lead a chunk (its "
                               "context), and that consecutive windows of a sentence longer than a chunk share.")
    chunk_boundary_every: int = Field(default=4, ge=1, description="One sentence in this many, chosen by its content "
                                      "hash, ends a chunk (besides paragraph ends and the size cap).")

    embedding_cache_bytes: int = Field(default=64 * 2**20, ge=0, description="Bytes of chunk vectors a process "
                                       "keeps by (weights, chunk text), so a chunk that comes back is not encoded "
                                       "again (0: off).")

    # Ingest micro-batching
    ingest_batch_records: int = Field(default=128, ge=1, description="Max records per ingest batch.")
    ingest_batch_seconds: float = Field(default=0.1, gt=0, description="Max wait to fill an ingest batch.")
    # Query serving
    query_batch_records: int = Field(default=64, ge=1, description="Max queries embedded together.")
    query_batch_seconds: float = Field(default=0.003, gt=0, description="Max wait to batch queries.")
    query_principals_required: bool = Field(default=False, description="Queries on Kafka must carry `principals` "
                                            "(whom they are asked for; an empty list: public documents only); one "
                                            "without is a dead letter. Producers to `queries` are trusted to tell.")
    query_cache_size: int = Field(default=10_000, ge=0, description="Cached answers; 0 disables the cache.")
    query_cache_ttl_s: float = Field(default=30.0, gt=0, description="Longest a cached answer is served.")
    query_cache_bytes: int = Field(default=64 * 2**20, ge=0, description="Memory the cached answers may take.")
    query_log_max_rows: int = Field(default=200_000, ge=1_000, description="Queries the query log keeps (oldest "
                                                                           "pruned first).")
    query_log_max_age_s: float = Field(default=7 * 86_400, gt=0, description="Longest a query stays in the log.")
    query_log_text_chars: int = Field(default=2_000, ge=100, description="Query and hit text kept per logged "
                                                                         "query (longer is cut).")
    http_max_query_chars: int = Field(default=4_000, ge=1, le=4_000, description="Longest `q` the HTTP API "
                                                                                 "accepts (as the Kafka path).")
    http_allowed_hosts: str = Field(default="", description="Comma-separated Host names the HTTP API answers "
                                    "besides loopback names and its own bind address (DNS-rebinding guard).")
    http_header_timeout_s: float = Field(default=10.0, gt=0, description="Longest a request's headers may take.")
    http_body_timeout_s: float = Field(default=30.0, gt=0, description="Longest a request's body may take.")
    http_idle_timeout_s: float = Field(default=75.0, gt=0, description="Longest an idle keep-alive connection "
                                                                       "stays open.")

    # Monitoring (quality suites and drift, per window)
    monitor_window_records: int = Field(default=1000, ge=1, description="Records that close a window.")
    monitor_window_seconds: float = Field(default=10.0, gt=0, description="Seconds that close a window.")
    monitor_min_drift_records: int = Field(default=30, ge=2, description="Smaller windows skip drift statistics.")
    monitor_embed_sample: int = Field(default=256, ge=2, description="Query texts embedded per window for drift.")
    monitor_max_pending_windows: int = Field(default=4, ge=1, description="Closed windows waiting for evaluation "
                                             "at most; a window beyond is skipped (counted), never queued.")
    drift_query_mean_shift: float = Field(default=0.08, gt=0, description="1 - cos(mean query embeddings).")
    drift_query_mmd: float = Field(default=0.05, gt=0, description="RBF MMD^2 of query embeddings.")
    drift_document_length_ks: float = Field(default=0.35, gt=0, description="KS statistic of document lengths.")
    drift_document_source_tv: float = Field(default=0.35, gt=0, description="Total variation of the source mix.")
    drift_feedback_positive_shift: float = Field(default=0.3, gt=0, description="Change in the positive share.")
    feedback_hold_s: float = Field(default=60.0, gt=0, description="How long feedback waits for its query's "
                                                                   "response before it is dead-lettered.")
    retrain_every_positive_pairs: int = Field(default=200, ge=1, description="New positive pairs per retrain.")
    retrain_schedule_s: float = Field(default=0.0, ge=0, description="Scheduled retrain period; 0 disables.")
    retrain_min_interval_s: float = Field(default=3600.0, ge=0, description="At most one drift retrain per interval.")
    stale_after_s: float = Field(default=300.0, gt=0, description="Silence after which an active topic is stale.")

    # Trainer (fine-tuning runs in a child process) and rollout (blue/green re-embedding)
    trainer_epochs: int = Field(default=3, ge=1, description="Passes over the training pairs.")
    trainer_batch_size: int = Field(default=16, ge=2, description="Examples per step (in-batch negatives).")
    trainer_learning_rate: float = Field(default=5e-5, gt=0, description="AdamW learning rate.")
    trainer_held_out_fraction: float = Field(default=0.2, gt=0, lt=1, description="Queries kept out of training "
                                                                                   "to evaluate on.")
    trainer_min_positive_pairs: int = Field(default=20, ge=1, description="Fewer positives: no training.")
    trainer_min_held_out_queries: int = Field(default=3, ge=1, description="Fewer held-out queries: reject.")
    promotion_margin: float = Field(default=0.01, description="nDCG@10 gain over the serving model a candidate "
                                                              "needs to be promoted.")
    trainer_attempts: int = Field(default=3, ge=1, description="Tries of one retrain before it is given up.")
    trainer_timeout_s: float = Field(default=3600.0, gt=0, description="Longest one training run may take.")
    trainer_nice: int = Field(default=10, ge=0, le=19, description="How much lower the training child's CPU "
                              "priority is than the worker's (serving and ingest come first).")
    trainer_rollout_wait_s: float = Field(default=7200.0, ge=0, description="Longest a retrain waits for a "
                                          "running or pending rollout to finish before it trains anyway.")
    rollout_step_documents: int = Field(default=64, ge=1, description="Documents re-embedded per rollout step "
                                                                      "(ingest interleaves between steps).")
    rollout_retire_after_s: float = Field(default=30.0, ge=0, description="How long the previous collection "
                                                                          "stays open for in-flight searches.")
    experiment_metric: Literal["positive_rate", "mrr@10", "ndcg@10"] = Field(
        default="mrr@10", description="Online metric an experiment's candidate must beat serving on.")
    experiment_margin: float = Field(default=0.0, ge=0, description="Least gain on the metric (and the interval's low "
                                                                    "end above zero) to promote.")
    experiment_min_judged: int = Field(default=100, ge=1, description="Judged queries per arm before an experiment "
                                                                      "decides (interleave: judged interleaved ones).")
    experiment_guardrail_positive_rate: float = Field(default=0.05, ge=0, description="Largest drop in positive rate "
                                                      "(candidate vs serving) tolerated before stopping.")
    experiment_guardrail_latency_ratio: float = Field(default=2.0, gt=1, description="Largest candidate/serving "
                                                      "latency p99 ratio tolerated before stopping.")
    experiment_watch_s: float = Field(default=3600.0, ge=0, description="How long a promoted candidate stays watched "
                                      "by the guardrails (a regression rolls it back).")
    experiment_check_s: float = Field(default=10.0, gt=0, description="How often running experiments are decided.")
    shadow_max_pending: int = Field(default=256, ge=1, description="Shadow searches waiting at most; more are "
                                    "skipped (counted): the shadow never slows the served path down.")
    evaluation_max_age_s: float = Field(default=7 * 86400.0, gt=0, description="How long answers and judgements "
                                        "stay in the evaluation store.")
    agents: str = Field(default="", description="Comma-separated agents to run (e.g. `trainer`); empty: all.")
    shared_dir: Path | None = Field(default=None, description="Query log and training pairs, shared by the "
                                                              "workers and the trainer; default DATA_DIR.")

    faults_file: Path | None = Field(default=None, description="Fault-injection plan for failure drills "
                                                                "(see streams/state/faults.py); unset: no faults.")
    store_retry_max_s: float = Field(default=10.0, gt=0, description="Backoff cap while the store fails.")
    sqlite_busy_timeout_s: float = Field(default=5.0, gt=0, description="How long a write to the SQLite state "
                                         "waits for another process's lock before it fails (and is retried).")
    database_url: str | None = Field(default=None, description="`postgresql://user:password@host:port/db`: the query "
                                     "log, feedback state, evaluation store and experiments live in this PostgreSQL "
                                     "database (workers on many machines share it); unset: SQLite files in "
                                     "SHARED_DIR.")
    database_pool_size: int = Field(default=4, ge=1, le=100, description="Connections each state store of a "
                                    "process may hold open to PostgreSQL.")
    database_timeout_s: float = Field(default=5.0, gt=0, description="How long a state operation waits to connect "
                                      "to PostgreSQL (or for a free pooled connection) before it fails (and is "
                                      "retried).")
    database_statement_timeout_s: float = Field(default=60.0, gt=0, description="Longest a PostgreSQL statement or "
                                                "lock wait may take before it fails (and is retried): a hung server "
                                                "or a lock held by a worker cut off from it is an outage, not a "
                                                "hang.")
    database_startup_wait_s: float = Field(default=120.0, ge=0, description="How long a process starting waits "
                                           "for PostgreSQL to be reachable (to migrate its schema) before it fails.")
    feedback_claim_s: float = Field(default=60.0, gt=0, description="How long a worker settling held feedback "
                                    "keeps it from the others (a worker that dies mid-settle lets it lapse).")
    pairs_max_rows: int = Field(default=500_000, ge=1_000, description="Training pairs kept (oldest pruned "
                                "first; trained models keep their lineage in their manifests).")
    pairs_max_age_s: float = Field(default=90 * 86_400.0, gt=0, description="Longest a training pair is kept.")
    store_compact_interval_s: float = Field(default=30.0, ge=0, description="How often the embedded store "
                                            "vacuums replaced points and flushes (on the writer thread); 0 disables.")

    @field_validator("kafka_bootstrap_servers", "qdrant_url", "qdrant_api_key", "admin_token", "kafka_sasl_password",
                     "api_keys_file", "api_key", "database_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _postgresql_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError("database_url must be a postgresql:// URL (unset keeps the state in SQLite files)")
        return url

    @field_validator("metadata_indexes")
    @classmethod
    def _metadata_indexes(cls, value: str) -> str:
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, _, kind = item.partition(":")
            if not METADATA_KEY.fullmatch(name.strip()) or kind.strip() not in METADATA_INDEX_TYPES:
                raise ValueError(f"metadata_indexes: {item!r} is not key:type (a key of letters, digits, _ and -; a "
                                 f"type of {', '.join(METADATA_INDEX_TYPES)})")
        return value

    @property
    def metadata_index_types(self) -> dict[str, str]:
        """metadata key -> its declared type (`metadata_indexes`)."""
        pairs = (item.partition(":") for item in filter(None, (p.strip() for p in self.metadata_indexes.split(","))))
        return {name.strip(): kind.strip() for name, _, kind in pairs}

    @field_validator("deadletter_max_bytes")
    @classmethod
    def _dead_letters_fit(cls, limit: int, info) -> int:  # type: ignore[no-untyped-def]
        producer = info.data.get("producer_max_bytes")
        if producer is not None and limit > producer:
            raise ValueError(f"deadletter_max_bytes ({limit}) must not exceed producer_max_bytes ({producer})")
        return limit

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, overlap: int, info) -> int:  # type: ignore[no-untyped-def]
        size = info.data.get("chunk_tokens")
        if size is not None and overlap >= size:
            raise ValueError(f"chunk_overlap ({overlap}) must be smaller than chunk_tokens ({size})")
        return overlap

    @property
    def models_dir(self) -> Path:
        return self.registry_dir or self.data_dir / "models"

    @property
    def shard_dir(self) -> Path:
        return self.data_dir / "qdrant"

    @property
    def run_file(self) -> Path:
        """Written by `gristmill up` so `status`, `demo` and `search` find the running stack."""
        return self.data_dir / "run.json"

    @property
    def query_log_path(self) -> Path:
        return (self.shared_dir or self.data_dir) / "queries.sqlite3"

    @property
    def evaluation_path(self) -> Path:
        return (self.shared_dir or self.data_dir) / "evaluation.sqlite3"

    @property
    def pairs_path(self) -> Path:
        return (self.shared_dir or self.data_dir) / "feedback.sqlite3"

    @property
    def agent_names(self) -> set[str]:
        return {name.strip() for name in self.agents.split(",") if name.strip()}

    @property
    def keeps_index_copy(self) -> bool:
        """A trainer that does not ingest, on the embedded store: it keeps a copy of the index of its own (see
        `streams.index_replica`), as no Qdrant server holds the one the workers write."""
        names = self.agent_names
        return bool(names) and "trainer" in names and "ingest" not in names and not self.qdrant_url

    @property
    def app_id(self) -> str:
        return f"gristmill-{self.namespace}" if self.namespace else "gristmill"
