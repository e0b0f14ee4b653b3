"""Fine-tuning job: a copy of the serving model trained with MultipleNegativesRankingLoss on feedback pairs,
evaluated against the serving model on held-out queries over the indexed documents, exported to ONNX.

Runs as its own process (`python -m streams.ml.training JOB_DIR`) so that training never touches the worker's
event loop, memory or threads; the trainer agent writes `job.json` and reads `result.json`. Needs the
`[train]` extra. Never contacts a model hub.
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

from streams.ml.ranking import mrr_at, ndcg_at

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
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
    pairs: list[dict[str, str]]  # TrainingPair fields
    corpus: dict[str, str]  # doc_id -> indexed content (title + text) of every live document
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

    def write(self, job_dir: Path) -> None:
        (job_dir / RESULT_FILE).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def read(cls, job_dir: Path) -> TrainingResult:
        return cls(**json.loads((job_dir / RESULT_FILE).read_text(encoding="utf-8")))


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


def rank_metrics(model: Any, judged: Mapping[str, tuple[str, dict[str, int]]], corpus: Mapping[str, str]
                 ) -> dict[str, float]:
    """Mean nDCG@10 and MRR@10 of `model` ranking every indexed document for each held-out query."""
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
    n = len(query_ids)
    return {
        "nDCG@10": sum(ndcg_at(rankings[q], judged[q][1], 10) for q in query_ids) / n,
        "MRR@10": sum(mrr_at(rankings[q], judged[q][1], 10) for q in query_ids) / n,
    }


def fine_tune(model: Any, examples: Sequence[tuple[str, str, str]], params: Hyperparameters) -> None:
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
    model.eval()


def run(job_dir: Path) -> TrainingResult:
    """Train, evaluate and export the candidate of `job_dir/job.json` into `job_dir/candidate/`."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    from streams.state.onnx_export import export_onnx

    started = time.perf_counter()
    job = TrainingJob.read(job_dir)
    params = job.hyperparameters
    train, judged = split_pairs(job.pairs, params.held_out_fraction)
    examples = triplets(train, job.corpus, params.seed)
    if not examples:
        raise ValueError(f"no positive training pairs outside the held-out slice ({len(job.pairs)} pairs in all)")
    model = SentenceTransformer(job.base_source, device="cuda" if _cuda() else "cpu")
    current = rank_metrics(model, judged, job.corpus)
    train_started = time.perf_counter()
    fine_tune(model, examples, params)
    train_seconds = time.perf_counter() - train_started
    candidate = rank_metrics(model, judged, job.corpus)
    weights = job_dir / CANDIDATE_DIR / "st"
    model.save(str(weights), create_model_card=False)
    facts = export_onnx(weights, job_dir / CANDIDATE_DIR)
    result = TrainingResult(current, candidate, len(examples), len({p["query_id"] for p in train}), len(judged),
                            round(train_seconds, 3), round(time.perf_counter() - started, 3),
                            int(facts["dim"]), int(facts["max_tokens"]))  # type: ignore[call-overload]
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
