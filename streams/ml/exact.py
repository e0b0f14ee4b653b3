"""Exact matches first: a query holding identifier-like tokens — part codes (`KV-4821-C`), error numbers (`E4821`,
`0x8007045D`, `ERR_TEMP_42`), function names (`parse_config_file`, `json.loads`, `getUserName`) — ranks the fused
candidates whose text contains them verbatim above the rest, in fused order otherwise.

Fusion alone cannot do this: RRF scores rank 1 and rank 2 of either side almost alike (1/61 against 1/62), so a
chunk that BM25 ranks first for a rare code loses to one that both rankings place second or third. An ordinary
question holds no such token and is answered exactly as fused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from streams.state.store import SearchHit

_EDGES = "\"'`,.;:!?()[]{}<>"  # punctuation around a token in prose, stripped before it is judged
_IDENTIFIER = re.compile(
    r"(?=[\w.\-:/#]*\d)(?=[\w.\-:/#]*[A-Za-z])[\w.\-:/#]+"  # letters and digits: codes, error numbers, hex
    r"|[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+"  # snake_case, SCREAMING_CASE
    r"|[a-z]+[A-Z][A-Za-z0-9]*"  # camelCase
    r"|[A-Za-z_]\w+(?:\.[A-Za-z_]\w+)+")  # dotted names: json.loads, os.path.join
MAX_IDENTIFIERS = 8  # tokens a query is boosted by at most (the first ones)


def identifier_tokens(text: str) -> tuple[str, ...]:
    """The query's identifier-like tokens, casefolded, without repeats, in order (at most `MAX_IDENTIFIERS`)."""
    found: dict[str, None] = {}
    for word in text.split():
        token = word.strip(_EDGES)
        if len(token) >= 2 and _IDENTIFIER.fullmatch(token):
            found.setdefault(token.casefold(), None)
    return tuple(found)[:MAX_IDENTIFIERS]


@lru_cache(maxsize=4096)
def _occurrence(token: str) -> re.Pattern[str]:
    """`token` as a whole: not inside a longer word or code (`E4821` is not found in `E48210` nor `XE4821`)."""
    return re.compile(rf"(?<![A-Za-z0-9_]){re.escape(token)}(?![A-Za-z0-9_])", re.IGNORECASE)


def exact_first(hits: Sequence[SearchHit], tokens: Sequence[str]) -> list[SearchHit]:
    """`hits` (fused order) with those containing more of `tokens` verbatim first; ties keep the fused order."""
    if not tokens:
        return list(hits)
    patterns = [_occurrence(token) for token in tokens]
    found = [sum(1 for pattern in patterns if pattern.search(hit.text)) for hit in hits]
    order = sorted(range(len(hits)), key=lambda i: -found[i])  # stable: fused order within equal counts
    return [hits[i] for i in order]
