"""`gristmill deadletter inspect|replay`: dead letters with their reasons, and fixed records sent again."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from streams.cli.context import console, fail, load_settings, require_kafka, styled, untrusted


def deadletter_inspect(
    limit: Annotated[int | None, typer.Option(help="At most this many, oldest first.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write them as JSONL here, to fix and replay.")] = None,
) -> None:
    """List dead letters with their reasons (read from the start of the dead-letter topic)."""
    from streams.deadletters import Foreign, read_dead_letters, write_jsonl

    settings = require_kafka(load_settings())
    foreign = Foreign()
    letters = list(read_dead_letters(settings, limit=limit, foreign=foreign))
    table = Table(title=f"{len(letters)} dead letters")
    for column in ("topic", "partition@offset", "key", "reasons", "value as received"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        value = ((letter.value or "")[:120] + (" (base64)" if letter.value_encoding == "base64" else "")
                 + (f" (truncated; {letter.value_size:,} bytes received)" if letter.value_truncated else ""))
        table.add_row(*(untrusted(cell) for cell in (
            letter.topic, f"{letter.partition}@{letter.offset}", letter.key or "",
            "\n".join(f"{e.loc}: {e.msg}" for e in letter.errors), value)))
    console.print(table)
    if foreign.count:
        console.print(styled(f"skipped {foreign.count} records that are not dead letters", "yellow",
                             f" ({'; '.join(foreign.examples)})"), soft_wrap=True)
    if out is not None:
        write_jsonl(letters, out)
        console.print(untrusted(f"wrote {len(letters)} dead letters to {out}: fix their `value` and run "
                                f"`gristmill deadletter replay {out}`"))


def deadletter_replay(
    path: Annotated[Path, typer.Argument(help="Dead letters as JSONL (from `inspect --out`), values fixed.")],
    dry_run: Annotated[bool, typer.Option(help="Only check them.")] = False,
) -> None:
    """Re-check fixed dead letters and produce the valid ones to the topics they came from."""
    from streams.deadletters import plan_replay, replay

    settings = require_kafka(load_settings())
    try:
        plan = plan_replay(path, settings)
    except OSError as exc:
        raise fail("cannot read ", path, f": {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise fail("not UTF-8 text: ", path, f" ({exc.reason} at byte {exc.start}): expected dead letters as JSON "
                   "lines, as `gristmill deadletter inspect --out` writes them") from exc
    for number, reasons in plan.still_bad:
        console.print(styled(f"line {number} still invalid, not replayed: ", "yellow", reasons), soft_wrap=True)
    sent = 0 if dry_run else replay(plan, settings)
    console.print(f"{len(plan.ready)} valid, {len(plan.still_bad)} still invalid; replayed {sent}")
    if plan.still_bad:
        raise typer.Exit(4)
