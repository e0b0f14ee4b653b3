"""Synthetic record streams (stationary, drifted, degraded) for monitoring tests and `gristmill bench monitor`."""

from __future__ import annotations

import random

from schemas import DocumentEvent, FeedbackEvent, QueryEvent

COOKING = (["how long should I {v} {f}", "best way to {v} {f}", "{f} recipe with {i}", "can you {v} frozen {f}",
            "what temperature to {v} {f} at", "easy {f} dinner with {i}"],
           {"v": ["bake", "roast", "grill", "boil", "fry", "steam"],
            "f": ["salmon", "chicken thighs", "potatoes", "broccoli", "pork chops", "tofu", "rice", "lentils"],
            "i": ["garlic", "lemon", "butter", "thyme", "chili", "ginger"]})
FINANCE = (["how do I {v} my {a}", "{a} tax rules in {c}", "is it wise to {v} {a} now",
            "fees for {a} accounts in {c}", "should I {v} {a} before retirement"],
           {"v": ["rebalance", "sell", "refinance", "diversify", "hedge"],
            "a": ["index funds", "mortgage", "bonds", "pension", "stock options", "savings"],
            "c": ["Germany", "Canada", "Japan", "Brazil", "Kenya"]})


def _fill(rng: random.Random, domain: tuple[list[str], dict[str, list[str]]]) -> str:
    template = rng.choice(domain[0])
    return template.format(**{k: rng.choice(v) for k, v in domain[1].items()})


def queries(count: int, seed: int, domain: str = "cooking") -> list[QueryEvent]:
    rng = random.Random(seed)
    chosen = COOKING if domain == "cooking" else FINANCE
    return [QueryEvent(query_id=f"{domain}-{seed}-{i}", text=_fill(rng, chosen),
                       top_k=rng.choice([5, 10, 10, 20])) for i in range(count)]


def documents(count: int, seed: int, *, mean_words: int = 120, sources: tuple[str, ...] = ("wiki", "blog", "docs"),
              short_share: float = 0.0) -> list[DocumentEvent]:
    rng = random.Random(seed)
    words = ["stream", "index", "model", "kafka", "vector", "chunk", "query", "answer", "fresh", "version",
             "update", "delete"]
    events = []
    for i in range(count):
        length = 2 if rng.random() < short_share else max(5, int(rng.gauss(mean_words, mean_words / 4)))
        events.append(DocumentEvent(doc_id=f"d{seed}-{i}", version=1, op="upsert", source=rng.choice(sources),
                                    text=" ".join(rng.choice(words) for _ in range(length))))
    return events


def feedback(count: int, seed: int, positive_share: float = 0.5) -> list[FeedbackEvent]:
    rng = random.Random(seed)
    return [FeedbackEvent(query_id=f"q{seed}-{i}", doc_id=f"d{i % 50}",
                          label=1 if rng.random() < positive_share else -1) for i in range(count)]
