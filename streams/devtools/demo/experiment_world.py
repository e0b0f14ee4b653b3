"""A generated world for live experiments: a catalogue searched two ways (by part code, by topic), two "models"
that each get one way right, a query stream with segments, and simulated users whose feedback follows relevance.

`SlicedEncoder`s are hashing encoders that see only part of a text: `codes+prefixes` embeds part codes exactly but
topics only by their first two letters (apple and apricot collide: worse on topics), `words` embeds topic words but
no codes (blind on codes), `all` embeds every word. `words` and `codes+prefixes` are each better on one slice and
worse on the other; `all` beats `codes+prefixes`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from schemas import DocumentEvent, FeedbackEvent, QueryEvent
from streams.ml.serving import PairOpener, Serving, serving_pair
from streams.settings import Settings
from streams.state.hashing_encoder import HashingEncoder
from streams.state.memory_store import InMemoryVectorStore
from streams.state.registry import ModelVersion

TOPICS = ["apple", "apricot", "banana", "bandana", "cherry", "chervil", "lemon", "lentil", "mango", "mangrove",
          "olive", "olivine", "pepper", "peppermint", "tomato", "tomahawk"]
FILLER = ["steel", "cable", "bracket", "mount", "panel", "switch", "valve", "gasket", "hinge", "spring"]
_CODE = re.compile(r"^[a-z]{2}\d{3}$")


class SlicedEncoder(HashingEncoder):
    """A hashing encoder that keeps only the part of each text its `view` keeps."""

    def __init__(self, version: str, dim: int, view: str) -> None:
        super().__init__(version, dim)
        self.view = view

    def _seen(self, text: str) -> str:
        words = re.findall(r"\w+", text.casefold())
        if self.view == "all":
            return " ".join(words)
        if self.view == "words":
            return " ".join(w for w in words if not _CODE.match(w))
        return " ".join(w if _CODE.match(w) else w[:2] for w in words)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return super().encode([self._seen(t) for t in texts])


def sliced_pairs(settings: Settings, views: dict[str, str], dim: int = 256) -> PairOpener:
    """Pairs of a `SlicedEncoder` (its view by version) and an in-memory store kept across re-opens."""
    stores: dict[str, InMemoryVectorStore] = {}

    def open_pair(model: ModelVersion) -> Serving:
        store = stores.setdefault(model.version, InMemoryVectorStore(f"chunks-{model.version}", dim))
        return serving_pair(settings, model, SlicedEncoder(model.version, dim, views[model.version]), store)
    return open_pair


@dataclass(frozen=True)
class Item:
    doc_id: str
    code: str
    topic: str


def catalogue(count: int = 48, seed: int = 3) -> list[Item]:
    rng = random.Random(seed)
    return [Item(f"item-{i:03d}", f"zx{i:03d}", TOPICS[i % len(TOPICS)]) for i in rng.sample(range(1000), count)]


def documents(items: Sequence[Item]) -> list[DocumentEvent]:
    rng = random.Random(5)
    return [DocumentEvent(doc_id=item.doc_id, version=1, op="upsert", source="catalogue",
                          text=f"{item.code} {item.topic} {' '.join(rng.sample(FILLER, 3))}") for item in items]


@dataclass(frozen=True)
class Asked:
    query: QueryEvent
    relevant: frozenset[str]


def query_stream(items: Sequence[Item], count: int, seed: int, prefix: str, top_k: int = 5) -> list[Asked]:
    """Half by part code (segment `codes`), half by topic (segment `topics`; every item of the topic is relevant),
    from 40 users."""
    rng = random.Random(seed)
    asked = []
    for i in range(count):
        item = rng.choice(items)
        if i % 2:
            text, segment, relevant = item.code, "codes", frozenset({item.doc_id})
        else:
            text, segment = item.topic, "topics"
            relevant = frozenset(x.doc_id for x in items if x.topic == item.topic)
        asked.append(Asked(QueryEvent(query_id=f"{prefix}-{i}", text=text, top_k=top_k, mode="dense",
                                      group="doc", user_id=f"user-{rng.randrange(40)}", segment=segment),
                           relevant))
    return asked


def judge(asked: Asked, served: Sequence[str]) -> list[FeedbackEvent]:
    """A user who marks the first relevant hit good, or the top hit bad when nothing relevant was shown."""
    for doc_id in served:
        if doc_id in asked.relevant:
            return [FeedbackEvent(query_id=asked.query.query_id, doc_id=doc_id, label=1)]
    return [FeedbackEvent(query_id=asked.query.query_id, doc_id=served[0], label=-1)] if served else []


def click(asked: Asked, served: Sequence[str], patience: float = 0.6) -> list[FeedbackEvent]:
    """A user with position bias (the cascade model): reads hits top-down, goes on to the next with probability
    `patience`, marks the first relevant hit read as good (nine times in ten) and leaves nothing when none was;
    deterministic per query."""
    rng = random.Random(asked.query.query_id)
    for doc_id in served:
        if doc_id in asked.relevant and rng.random() < 0.9:
            return [FeedbackEvent(query_id=asked.query.query_id, doc_id=doc_id, label=1)]
        if rng.random() > patience:
            break
    return [FeedbackEvent(query_id=asked.query.query_id, doc_id=served[0], label=-1)] if served else []
