"""`gristmill dataset identifiers OUT`: a BEIR-format set that asks for exact identifiers inside ordinary prose.

200 maintenance notes. 40 of them each mention one identifier no other note holds — 14 part codes (`KV-4821-C`),
13 error codes (`E4821`, `0x8007045D`, `ERR_TEMP_42`) and 13 function names (`parse_config_file`,
`readSensorFrame`) — and 160 mention look-alikes of those (`KV-4821-D`, `KV-4812-C`, `E4812`, `ERR_TEMP_24`,
`parse_file_config`, `parse_config_files`) in the same kind of prose, four per identifier. Each query is one
identifier alone; its one relevant document is the note that holds it. A dense model sees the look-alikes as the
same string; BM25 splits `KV-4821-C` and `parse_config_file` into words the look-alikes share.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TARGETS = {"part code": 14, "error code": 13, "function name": 13}
LOOK_ALIKES = 4  # distractor notes per identifier

_SYSTEMS = ["cooling loop", "hydraulic press", "conveyor drive", "boiler feed pump", "air compressor",
            "packaging line", "chiller unit", "extruder", "backup generator", "sorting robot", "paint booth fan",
            "water treatment skid", "kiln burner", "forklift charger", "welding cell"]
_SITES = ["plant 2", "the north hall", "line B", "the east warehouse", "building 7", "the pilot line", "bay 4"]
_OPENINGS = [
    "During the night shift the {system} in {site} stopped twice.",
    "Operators at {site} reported noise from the {system} after the weekend restart.",
    "Routine inspection of the {system} in {site} found wear on the seals.",
    "The {system} at {site} tripped its breaker shortly after start-up.",
    "A technician was called to {site} because the {system} lost pressure.",
    "Vibration readings on the {system} in {site} crept above the alarm limit.",
]
_MENTIONS = {
    "part code": ["The replacement part {id} was fitted and the old one returned to stores.",
                  "We ordered {id} from the supplier; the spare on the shelf was the wrong revision.",
                  "The bearing kit {id} was swapped after the shaft was realigned."],
    "error code": ["The controller logged {id} three times before the shutdown.",
                   "The panel showed {id} and the unit refused to restart until it was reset.",
                   "Diagnostics returned {id}, which the manual lists under sensor faults."],
    "function name": ["The firmware call {id} timed out while the unit was polling its sensors.",
                      "A stack trace pointed at {id} in the monitoring service.",
                      "We patched {id} so that it retries instead of giving up on the first failure."],
}
_CLOSINGS = [
    "After the fix the {system} ran for a full shift without alarms.",
    "The work order was closed and the next check is scheduled in two weeks.",
    "Production resumed after about forty minutes of downtime.",
    "The shift lead asked for the incident to be reviewed at the weekly meeting.",
    "Temperatures and currents were back within limits by the end of the day.",
    "Maintenance will keep an eye on it and log any recurrence.",
]
_FILLER = [
    "Lubrication was topped up and the belts were re-tensioned.",
    "The safety interlocks were tested and worked as expected.",
    "No leaks were found on the hoses or fittings.",
    "The logbook entry was signed off by the shift lead.",
    "Spare filters were checked and two were replaced.",
    "The coupling guard was refitted after the inspection.",
]
_VERBS = ["parse", "read", "load", "write", "check", "reset", "sync", "update", "fetch", "flush"]
_NOUNS = ["config", "sensor", "frame", "buffer", "valve", "motor", "alarm", "queue", "state", "cache", "limit",
          "status"]
_WORDS = ["TEMP", "PRESS", "FLOW", "VOLT", "SPEED", "LEVEL", "LOAD"]


@dataclass(frozen=True)
class Identifier:
    kind: str
    text: str
    look_alikes: tuple[str, ...]


def _digits(rng: random.Random, n: int) -> str:
    """`n` different digits (so that any two neighbours can be swapped)."""
    return "".join(rng.sample("123456789", n))


def _swapped(rng: random.Random, digits: str) -> str:
    """`digits` with two different neighbours swapped (4821 -> 4812)."""
    spots = [i for i in range(len(digits) - 1) if digits[i] != digits[i + 1]]
    i = rng.choice(spots)
    return digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:]


def _part_code(rng: random.Random) -> Identifier:
    prefix, digits, suffix = "".join(rng.choice("ABCDEFGHKLMNPRSTVX") for _ in range(2)), _digits(rng, 4), rng.choice(
        "ABCDEFGH")
    other = rng.choice([c for c in "ABCDEFGH" if c != suffix])
    return Identifier("part code", f"{prefix}-{digits}-{suffix}", (
        f"{prefix}-{digits}-{other}", f"{prefix}-{_swapped(rng, digits)}-{suffix}", f"{prefix}-{digits}",
        f"{prefix}-{_swapped(rng, digits)}-{other}"))


def _error_code(rng: random.Random) -> Identifier:
    style = rng.choice(["e", "hex", "word"])
    if style == "e":
        digits = _digits(rng, 4)
        return Identifier("error code", f"E{digits}", (f"E{_swapped(rng, digits)}", f"E{digits}0", f"F{digits}",
                                                       f"E{digits[:3]}"))
    if style == "hex":
        tail = "".join(rng.choice("0123456789ABCDEF") for _ in range(3)) + _digits(rng, 1)
        return Identifier("error code", f"0x8007{tail}", (f"0x8007{tail[::-1]}", f"0x8004{tail}",
                                                          f"0x8007{tail[:3]}0", f"0x80070{tail[1:]}"))
    word, digits = rng.choice(_WORDS), _digits(rng, 2)
    return Identifier("error code", f"ERR_{word}_{digits}", (
        f"ERR_{word}_{_swapped(rng, digits)}", f"ERR_{word}_{digits}0",
        f"WARN_{word}_{digits}", f"ERR_{word}"))


def _function_name(rng: random.Random) -> Identifier:
    verb, first, second = rng.choice(_VERBS), *rng.sample(_NOUNS, 2)
    if rng.random() < 0.5:
        return Identifier("function name", f"{verb}_{first}_{second}", (
            f"{verb}_{second}_{first}", f"{verb}_{first}_{second}s", f"{verb}_{first}",
            f"{rng.choice([v for v in _VERBS if v != verb])}_{first}_{second}"))
    return Identifier("function name", f"{verb}{first.title()}{second.title()}", (
        f"{verb}{second.title()}{first.title()}", f"{verb}{first.title()}{second.title()}s", f"{verb}{first.title()}",
        f"{rng.choice([v for v in _VERBS if v != verb])}{first.title()}{second.title()}"))


_MAKERS: dict[str, Callable[[random.Random], Identifier]] = {
    "part code": _part_code, "error code": _error_code, "function name": _function_name}


def _whole(token: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9_]){re.escape(token)}(?![A-Za-z0-9_])", re.IGNORECASE)


def _identifiers(rng: random.Random) -> list[Identifier]:
    """40 identifiers; none is a look-alike of another, and no look-alike contains an identifier as a whole."""
    chosen: list[Identifier] = []
    used: set[str] = set()
    for kind, count in TARGETS.items():
        while sum(1 for i in chosen if i.kind == kind) < count:
            candidate = _MAKERS[kind](rng)
            names = [candidate.text, *candidate.look_alikes]
            if len({n.casefold() for n in names}) < len(names) or any(n.casefold() in used for n in names):
                continue
            if any(_whole(i.text).search(n) for i in [*chosen, candidate] for n in [*names, *i.look_alikes]
                   if n != i.text):
                continue
            chosen.append(candidate)
            used |= {n.casefold() for n in names}
    return chosen


def _note(rng: random.Random, kind: str, identifier: str) -> str:
    fields = {"system": rng.choice(_SYSTEMS), "site": rng.choice(_SITES)}
    middle = [*rng.sample(_FILLER, 2), rng.choice(_MENTIONS[kind])]
    rng.shuffle(middle)
    sentences = [rng.choice(_OPENINGS), *middle, rng.choice(_CLOSINGS)]
    return " ".join(s.format(**fields, id=identifier) for s in sentences)


def write_identifier_set(out: Path, seed: int = 0) -> tuple[int, int]:
    """Write `corpus.jsonl`, `queries.jsonl` and `qrels/test.tsv` under `out`: (documents, queries)."""
    rng = random.Random(seed)
    identifiers = _identifiers(rng)
    notes: list[tuple[str, str]] = []  # (doc id, text)
    qrels: list[tuple[str, str]] = []
    for n, identifier in enumerate(identifiers):
        notes.append((f"note-{n:03d}-0", _note(rng, identifier.kind, identifier.text)))
        qrels.append((f"q{n:02d}", f"note-{n:03d}-0"))
        for m, look_alike in enumerate(identifier.look_alikes, start=1):
            notes.append((f"note-{n:03d}-{m}", _note(rng, identifier.kind, look_alike)))
    order = list(range(len(notes)))
    rng.shuffle(order)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for i in order:
            handle.write(json.dumps({"_id": notes[i][0], "title": "", "text": notes[i][1]}) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as handle:
        for n, identifier in enumerate(identifiers):
            handle.write(json.dumps({"_id": f"q{n:02d}", "text": identifier.text, "kind": identifier.kind}) + "\n")
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        handle.writelines(f"{query}\t{doc}\t1\n" for query, doc in qrels)
    return len(notes), len(identifiers)
