"""Ranking metrics (as trec_eval/pytrec_eval compute them for BEIR) and chunk-to-document rankings."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

Qrels = dict[str, dict[str, int]]


def ndcg_at(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    """nDCG@k with linear gain."""
    dcg = sum(judged.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranking[:k]))
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    relevant = {doc for doc, grade in judged.items() if grade > 0}
    return len(relevant & set(ranking[:k])) / len(relevant) if relevant else 0.0


def mrr_at(ranking: Sequence[str], judged: Mapping[str, int], k: int) -> float:
    for rank, doc in enumerate(ranking[:k]):
        if judged.get(doc, 0) > 0:
            return 1.0 / (rank + 1)
    return 0.0


def score_rankings(rankings: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Mean nDCG@10, Recall@100, MRR@10 and Success@1 (a relevant document first) over the judged queries that
    were ranked."""
    judged = [q for q in qrels if q in rankings]
    return {
        "nDCG@10": statistics.fmean(ndcg_at(rankings[q], qrels[q], 10) for q in judged),
        "Recall@100": statistics.fmean(recall_at(rankings[q], qrels[q], 100) for q in judged),
        "MRR@10": statistics.fmean(mrr_at(rankings[q], qrels[q], 10) for q in judged),
        "Success@1": statistics.fmean(mrr_at(rankings[q], qrels[q], 1) for q in judged),
    }


def documents_by_best_chunk(hits: Sequence[Mapping[str, object]]) -> list[str]:
    """Chunk hits (best first) -> documents ranked by their best chunk."""
    return list(dict.fromkeys(str(hit["doc_id"]) for hit in hits))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]
