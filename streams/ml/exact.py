"""Exact matches first: a query holding identifier-like tokens — part codes (`KV-4821-C`), error numbers (`E4821`,
`0x8007045D`, `ERR_TEMP_42`), function names (`parse_config_file`, `json.loads`, `readSensorFrame`) — ranks the
fused candidates whose text contains them verbatim above the rest, in fused order otherwise.

Fusion alone cannot do this: RRF scores rank 1 and rank 2 of either side almost alike (1/61 against 1/62), so a
chunk that BM25 ranks first for a rare code loses to one that both rankings place second or third. An ordinary
question holds no such token and is answered exactly as fused; a token that many candidates hold (`B12` in a
nutrition corpus) is not rare enough to decide the order and is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from streams.state.store import SearchHit

_EDGES = "\"'`,.;:!?()[]{}<>#-"  # punctuation around a token in prose, stripped before it is judged
_IDENTIFIER = re.compile(
    r"(?=[\w.\-:]*\d)(?=[\w.\-:]*[^\W\d_])[\w.\-:]+"  # letters and digits: codes, error numbers, hex
    r"|[^\W\d_][^\W_]*(?:_[^\W_]+)+"  # snake_case, SCREAMING_CASE (one way to match: no backtracking blow-up)
    r"|(?=\w{5})[a-z]+[A-Z]\w*"  # camelCase of 5 characters or more (not pH, mRNA)
    r"|[^\W\d]\w+(?:\.[^\W\d]\w+)+")  # dotted names: json.loads, os.path.join
_MEASURE = re.compile(r"[\d.,:]+[^\W\d_]{0,3}")  # a number with a short unit or suffix: 5mg, 2nd, 4K, 10:30am
MAX_IDENTIFIERS = 8  # tokens a query is boosted by at most (the first ones)
RARE_SHARE = 0.2  # a token held by more than this share of the candidates read is not rare: it is ignored
_BOUNDARY_BEFORE = r"(?<![\w\-./:])"  # not inside a longer word or code: E4821 is not in E48210, XE4821, X-E4821
_BOUNDARY_AFTER = r"(?![\w\-:]|\.\w)"  # nor in E4821-B or v1.2.3; a sentence's full stop may follow


def identifier_tokens(text: str) -> tuple[str, ...]:
    """The query's identifier-like tokens as written, without repeats (ignoring case), in order (at most
    `MAX_IDENTIFIERS`)."""
    found: dict[str, str] = {}
    for word in re.split(r"[\s/]+", text):
        token = word.strip(_EDGES)
        if token.endswith(("'s", "\u2019s")):  # a possessive: E4821's cause
            token = token[:-2]
        if len(token) >= 2 and _IDENTIFIER.fullmatch(token) and not _MEASURE.fullmatch(token):
            found.setdefault(token.casefold(), token)
    return tuple(found.values())[:MAX_IDENTIFIERS]


def exact_first(hits: Sequence[SearchHit], tokens: Sequence[str], window: int) -> list[SearchHit]:
    """`hits` (fused order) with those of the first `window` that contain more of the rare `tokens` verbatim
    (ignoring case) first; ties keep the fused order, and hits past the window stay where they are."""
    if not tokens or not hits:
        return list(hits)
    head, tail = hits[:window], hits[window:]
    keys = {token.casefold() for token in tokens}
    pattern = re.compile(_BOUNDARY_BEFORE + "(?:" + "|".join(re.escape(t) for t in sorted(tokens, key=len,
                                                                                        reverse=True))
                         + ")" + _BOUNDARY_AFTER, re.IGNORECASE)
    held = [{m.casefold() for m in pattern.findall(hit.text)} & keys for hit in head]
    common = {key for key in keys if sum(1 for h in held if key in h) > RARE_SHARE * window}
    found = [len(h - common) for h in held]
    order = sorted(range(len(head)), key=lambda i: -found[i])  # stable: fused order within equal counts
    return [head[i] for i in order] + list(tail)
