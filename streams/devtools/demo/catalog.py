"""A generated product catalogue whose internal part codes appear only in queries, never in documents.

The base model cannot know which description a code like `QX-4471` names; feedback on searches by code
teaches it. Used by the flywheel tests and the retrain benchmark.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ITEMS = ["water bottle", "desk lamp", "office chair", "backpack", "rain jacket", "coffee grinder", "bike helmet",
         "yoga mat", "wall clock", "tent", "kettle", "headphones", "keyboard", "frying pan", "umbrella",
         "sleeping bag", "toolbox", "blender", "running shoes", "camera tripod", "power bank", "thermos",
         "bookshelf", "garden hose", "ladder", "sunglasses", "wristwatch", "cutting board", "door mat", "fan"]
MATERIALS = ["stainless steel", "bamboo", "recycled plastic", "aluminium", "oak wood", "carbon fibre",
             "ceramic", "canvas", "leather", "glass"]
TRAITS = ["compact", "heavy-duty", "lightweight", "foldable", "waterproof", "insulated", "ergonomic", "cordless",
          "adjustable", "minimalist"]
COLOURS = ["black", "forest green", "navy blue", "bright red", "matte grey", "white", "sand beige", "orange"]
QUERY_TEMPLATES = ["{code}", "{code} specs", "what is {code}", "details for part {code}", "{code} datasheet",
                   "order {code}", "{code} product page", "info on item {code}"]


@dataclass(frozen=True)
class Product:
    code: str
    doc_id: str
    text: str


@dataclass(frozen=True)
class CodeQuery:
    query_id: str
    text: str
    doc_id: str


def products(count: int, seed: int = 7) -> list[Product]:
    rng = random.Random(seed)
    codes: set[str] = set()
    out = []
    while len(out) < count:
        code = f"{rng.choice('BDFGHKMPQRTVXZ')}{rng.choice('ACEHKLNRSTWY')}-{rng.randint(1000, 9999)}"
        if code in codes:
            continue
        codes.add(code)
        item, material, trait, colour = (rng.choice(ITEMS), rng.choice(MATERIALS), rng.choice(TRAITS),
                                         rng.choice(COLOURS))
        text = (f"A {trait} {item} made of {material}, finished in {colour}. "
                f"Sold individually; ships within {rng.randint(1, 9)} days.")
        out.append(Product(code, f"p{len(out):05d}", text))
    return out


def code_queries(catalog: list[Product], per_product: int = len(QUERY_TEMPLATES)) -> list[CodeQuery]:
    """Searches by part code, `per_product` phrasings each (ids stable across runs)."""
    return [CodeQuery(f"{product.doc_id}-q{i}", template.format(code=product.code), product.doc_id)
            for product in catalog for i, template in enumerate(QUERY_TEMPLATES[:per_product])]
