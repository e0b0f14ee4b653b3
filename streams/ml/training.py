"""Fine-tuning job: a copy of the serving model trained with MultipleNegativesRankingLoss on feedback pairs,
exported to ONNX, and evaluated against the serving model on held-out queries ranked the way serving ranks them
(`streams.ml.held_out`: the serving index's chunks and vectors, best chunk per document, the serving mode).

Runs as its own process (`python -m streams.ml.training JOB_DIR`) so that training never touches the worker's
event loop, memory or threads; the trainer agent writes `job.json` and the index snapshot, follows
`progress.json` and reads `result.json`. Needs the `[train]` extra. Never contacts a model hub.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streams.ml.held_out import HeldOutIndex, Ranking, embed_chunks, rank_metrics, read_snapshot
from streams.state.known_vectors import write_known_vectors

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.json"
PHASES = ("load", "index", "evaluate-serving", "fine-tune", "export", "embed-candidate", "evaluate-candidate")
PHASE_UNITS = {"index": "chunks", "evaluate-serving": "queries", "fine-tune": "steps", "embed-candidate": "chunks",
               "evaluate-candidate": "queries"}
CANDIDATE_DIR = "candidate"  # ONNX export (model.onnx, tokenizer.json) + `st/` weights for the next fine-tune


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 5e-5
    warmup_fraction: float = 0.1
    held_out_fraction: float = 0.2
    seed: int = 13


@dataclass
class TrainingJob:
    """Everything the job needs, so it reads nothing of the worker's state."""

    base_version: str
    base_source: str  # sentence-transformers weights of the serving version
    base_path: str  # the serving version's registry directory (its ONNX export embeds the held-out queries)
    pairs: list[dict[str, str]]  # TrainingPair fields
    corpus: dict[str, str]  # doc_id -> indexed content (title + text) of every live document
    ranking: dict[str, Any] = field(default_factory=lambda: Ranking().as_dict())  # how serving ranks
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)

    def write(self, job_dir: Path) -> None:
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / JOB_FILE).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def read(cls, job_dir: Path) -> TrainingJob:
        data = json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8"))
        data["hyperparameters"] = Hyperparameters(**data["hyperparameters"])
        return cls(**data)


@dataclass
class TrainingResult:
    current: dict[str, float]  # serving model on the held-out queries
    candidate: dict[str, float]  # fine-tuned model on the same queries
    train_pairs: int
    train_queries: int
    held_out_queries: int
    train_seconds: float
    total_seconds: float
    dim: int
    max_tokens: int
    index_chunks: int = 0  # chunks of the serving index the held-out queries were ranked over
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def write(self, job_dir: Path) -> None:
        (job_dir / RESULT_FILE).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def read(cls, job_dir: Path) -> TrainingResult:
        return cls(**json.loads((job_dir / RESULT_FILE).read_text(encoding="utf-8")))


@dataclass
class TrainingProgress:
    """Where a training run is: its phase (of `PHASES`), work done of total in it, seconds of finished phases."""

    phase: str
    done: int
    total: int
    phase_started_at: float
    started_at: float
    phase_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self, now: float) -> dict[str, object]:
        """For `/health`: adds the phase's number, unit, elapsed time and ETA (from its own pace so far)."""
        elapsed = max(0.0, now - self.phase_started_at)
        eta = elapsed / self.done * (self.total - self.done) if 0 < self.done < self.total else None
        return {**asdict(self), "step": PHASES.index(self.phase) + 1 if self.phase in PHASES else 0,
                "steps": len(PHASES), "unit": PHASE_UNITS.get(self.phase, ""), "phase_elapsed_s": round(elapsed, 1),
                "elapsed_s": round(max(0.0, now - self.started_at), 1),
                "eta_s": None if eta is None else round(eta, 1)}

    @classmethod
    def read(cls, job_dir: Path) -> TrainingProgress | None:
        """The child's latest progress, None before its first write (or if the file is being replaced)."""
        try:
            return cls(**json.loads((job_dir / PROGRESS_FILE).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None


class ProgressWriter:
    """Writes `TrainingProgress` for the trainer to read: atomically, at every phase change and at most once a
    second in between."""

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self.path = path
        self.interval_s = interval_s
        now = time.time()
        self.progress = TrainingProgress("", 0, 0, now, now)
        self._written = 0.0

    @property
    def phase_seconds(self) -> dict[str, float]:
        return self.progress.phase_seconds

    def phase(self, name: str, total: int) -> None:
        self._close_phase()
        p = self.progress
        p.phase, p.done, p.total, p.phase_started_at = name, 0, total, time.time()
        self._write()

    def advance(self, n: int = 1) -> None:
        self.progress.done = min(self.progress.total, self.progress.done + n)
        if time.monotonic() - self._written >= self.interval_s:
            self._write()

    def finish(self) -> None:
        self._close_phase()
        self.progress.phase, self.progress.done, self.progress.total = "done", 0, 0
        self._write()

    def _close_phase(self) -> None:
        p = self.progress
        if p.phase:
            p.phase_seconds[p.phase] = p.phase_seconds.get(p.phase, 0.0) + time.time() - p.phase_started_at

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.progress)), encoding="utf-8")
        os.replace(tmp, self.path)
        self._written = time.monotonic()


def held_out(query_id: str, fraction: float) -> bool:
    """Stable split by query: every judgement of a query lands on the same side, run after run."""
    bucket = int.from_bytes(hashlib.sha256(query_id.encode("utf-8")).digest()[:4], "big") % 10_000
    return bucket < fraction * 10_000


def split_pairs(pairs: Sequence[Mapping[str, str]], fraction: float
                ) -> tuple[list[Mapping[str, str]], dict[str, tuple[str, dict[str, int]]]]:
    """Training pairs and held-out judgements `{query_id: (query, {doc_id: 1})}` (queries with a positive)."""
    train: list[Mapping[str, str]] = []
    judged: dict[str, tuple[str, dict[str, int]]] = {}
    for pair in pairs:
        if held_out(pair["query_id"], fraction):
            if pair["kind"] == "positive":
                judged.setdefault(pair["query_id"], (pair["query"], {}))[1][pair["doc_id"]] = 1
        else:
            train.append(pair)
    return train, judged


def triplets(train: Sequence[Mapping[str, str]], corpus: Mapping[str, str], seed: int) -> list[tuple[str, str, str]]:
    """(query, positive, negative) per positive pair: a judged or served hard negative of the same query when
    there is one, else a random indexed document that is not a positive of it."""
    rng = random.Random(seed)
    positives: dict[str, set[str]] = defaultdict(set)
    negatives: dict[str, list[str]] = defaultdict(list)
    for pair in train:
        if pair["kind"] == "positive":
            positives[pair["query_id"]].add(pair["doc_id"])
        else:
            negatives[pair["query_id"]].append(pair["text"])
    doc_ids = sorted(corpus)
    out = []
    for pair in train:
        if pair["kind"] != "positive":
            continue
        hard = negatives.get(pair["query_id"])
        if hard:
            negative = rng.choice(hard)
        else:
            others = [d for d in rng.sample(doc_ids, min(len(doc_ids), 8)) if d not in positives[pair["query_id"]]]
            if not others:
                continue
            negative = corpus[others[0]]
        out.append((pair["query"], pair["text"], negative))
    return out


def fine_tune(model: Any, examples: Sequence[tuple[str, str, str]], params: Hyperparameters,
              progress: ProgressWriter | None = None) -> None:
    """Plain training loop over sentence-transformers' MultipleNegativesRankingLoss (in-batch + hard negatives)."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    torch.manual_seed(params.seed)
    rng = random.Random(params.seed)
    loss_fn = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=0.01)
    steps = params.epochs * max(1, -(-len(examples) // params.batch_size))
    warmup = max(1, int(steps * params.warmup_fraction))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup))))
    if progress is not None:
        progress.phase("fine-tune", steps)
    model.train()
    order = list(examples)
    for _ in range(params.epochs):
        rng.shuffle(order)
        for start in range(0, len(order), params.batch_size):
            batch = order[start:start + params.batch_size]
            if len(batch) < 2:
                continue  # one example has no in-batch negatives
            features = [
                {k: v.to(model.device) if hasattr(v, "to") else v
                 for k, v in model.preprocess([row[column] for row in batch]).items()}
                for column in range(3)
            ]
            loss = loss_fn(features, None)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            if progress is not None:
                progress.advance()
    model.eval()


def run(job_dir: Path) -> TrainingResult:
    """Train, export and evaluate the candidate of `job_dir/job.json` into `job_dir/candidate/`."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    progress = ProgressWriter(job_dir / PROGRESS_FILE)
    progress.phase("load", 1)
    from sentence_transformers import SentenceTransformer

    from streams.state.onnx_export import export_onnx
    from streams.state.registry import ModelVersion, read_version
    from streams.state.tokenization import bound_word_length

    job = TrainingJob.read(job_dir)
    params = job.hyperparameters
    ranking = Ranking.from_dict(job.ranking)
    train, judged = split_pairs(job.pairs, params.held_out_fraction)
    examples = triplets(train, job.corpus, params.seed)
    if not examples:
        raise ValueError(f"no positive training pairs outside the held-out slice ({len(job.pairs)} pairs in all)")
    chunks = read_snapshot(job_dir)
    serving = ranking.encoder(read_version(Path(job.base_path), "serving"))
    model = SentenceTransformer(job.base_source, device="cuda" if _cuda() else "cpu")
    bound_word_length(model.tokenizer.backend_tokenizer)  # as the chunker and the serving encoder tokenize

    progress.phase("index", len(chunks))
    index = HeldOutIndex(job_dir / "held-out", chunks, ranking)
    progress.advance(len(chunks))
    progress.phase("evaluate-serving", len(judged))
    current = rank_metrics(index.rank(serving, judged, progress.advance), judged)

    fine_tune(model, examples, params, progress)
    progress.phase("export", 1)
    weights = job_dir / CANDIDATE_DIR / "st"
    model.save(str(weights), create_model_card=False)
    del model
    facts = export_onnx(weights, job_dir / CANDIDATE_DIR)

    exported = ModelVersion("candidate", "candidate", job_dir / CANDIDATE_DIR, int(facts["dim"]),  # type: ignore[call-overload]
                            int(facts["max_tokens"]), str(weights), created_at="")  # type: ignore[call-overload]
    encoder = ranking.encoder(exported)
    progress.phase("embed-candidate", len(chunks))
    vectors = embed_chunks(encoder, chunks, progress.advance)
    write_known_vectors(job_dir / CANDIDATE_DIR, [c.text for c in chunks], vectors)  # the rollout's, if promoted
    progress.phase("evaluate-candidate", len(judged))
    candidate = rank_metrics(index.rank(encoder, judged, progress.advance, vectors), judged)
    progress.finish()
    seconds = progress.phase_seconds
    result = TrainingResult(current, candidate, len(examples), len({p["query_id"] for p in train}), len(judged),
                            round(seconds["fine-tune"], 3), round(sum(seconds.values()), 3),
                            int(facts["dim"]), int(facts["max_tokens"]),  # type: ignore[call-overload]
                            len(chunks), {k: round(v, 3) for k, v in seconds.items()})
    result.write(job_dir)
    return result


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m streams.ml.training JOB_DIR", file=sys.stderr)
        return 2
    result = run(Path(args[0]))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
