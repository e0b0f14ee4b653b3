"""`gristmill sources check`: a mapping file checked, and the documents it makes of sample records shown."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from streams.cli.context import console, fail, load_settings, require_kafka, styled, untrusted


def _preview(text: str | None, chars: int = 80) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[:chars - 1] + "…"


def check(
    file: Annotated[Path, typer.Argument(help="The sources YAML file (what GRISTMILL_SOURCES_FILE would name).")],
    sample: Annotated[Path | None, typer.Option(help="Records to map, one per line: the JSON value (null: a "
                                                     "tombstone), or {\"key\": ..., \"value\": ...}; for avro and "
                                                     "json-schema sources, the records as decoded.")] = None,
    from_topic: Annotated[str | None, typer.Option("--from", metavar="TOPIC", help="Map records read from TOPIC "
                                                   "(the source's own, or a copy of it), from its start; nothing is "
                                                   "committed.")] = None,
    source: Annotated[str | None, typer.Option(help="Which source the records are for (needed when the file "
                                                    "has several).")] = None,
    limit: Annotated[int, typer.Option(help="Records read with --from at most.", min=1)] = 20,
) -> None:
    """Check a sources file; with records, print the document event each one becomes, or why it is a dead letter."""
    from schemas import DocumentEvent
    from streams.sources.mapper import SourceContract
    from streams.sources.mapping import REGISTRY_FORMATS, InvalidSources, load_sources
    from streams.sources.registry import registry_client
    from streams.sources.samples import InvalidSample, read_topic, sample_messages
    from streams.validation import Accepted, Rejected

    settings = load_settings()
    try:
        sources = load_sources(file, settings.namespace)
    except InvalidSources as exc:
        for line in str(exc).splitlines():
            console.print(styled("invalid: ", "red", line), soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(untrusted(f"{file}: {len(sources)} source(s) OK: " + ", ".join(
        f"{s.name} ({s.format} from {s.topic})" for s in sources)), soft_wrap=True)
    if sample is None and from_topic is None:
        return
    if sample is not None and from_topic is not None:
        raise fail("give --sample or --from, not both", status=2)
    chosen = [s for s in sources if source is None or s.name == source]
    names = ", ".join(s.name for s in sources)
    if not chosen:
        raise fail(f"no source named {source!r} in {file}; it has: ", names, status=2)
    if len(chosen) > 1:
        raise fail("the file has several sources; name one with --source: ", names, status=2)
    mapping = chosen[0]
    try:
        messages = (sample_messages(sample, mapping.topic) if sample is not None
                    else list(read_topic(require_kafka(settings), from_topic or mapping.topic, limit)))
    except InvalidSample as exc:
        raise fail("invalid sample: ", exc, status=2) from None
    registry = registry_client(settings)
    if sample is not None and mapping.format in REGISTRY_FORMATS:  # sample lines are records as decoded: JSON
        mapping = mapping.model_copy(update={
            "format": "debezium-json" if mapping.changes == "debezium" else "json", "envelope": None})
    elif mapping.format in REGISTRY_FORMATS and registry is None:
        raise fail(f"source {mapping.name} is {mapping.format}: ", "set GRISTMILL_SCHEMA_REGISTRY_URL", status=2)
    contract = SourceContract.of(mapping, registry)
    try:
        asyncio.run(asyncio.wait_for(contract.prepare(messages), 30))
    except TimeoutError:
        raise fail("the schema registry did not answer in 30 s: ", settings.schema_registry_url) from None
    problems = 0
    for message in messages:
        where = f"line {message.offset}" if sample is not None else f"{message.partition}@{message.offset}"
        checked = contract.check(message)
        if isinstance(checked, Accepted) and not isinstance(checked.record, DocumentEvent):
            console.print(untrusted(f"{where}: truncate: every document of the source older than version "
                                    f"{checked.record.version} is deleted"), soft_wrap=True)
        elif isinstance(checked, Accepted):
            d = checked.record
            change = contract.mapper.change(message)  # type: ignore[union-attr]
            why = " (the row leaves the filter)" if d.op == "delete" and change.kind == "upsert" else ""
            shown = (f"{where}: {d.op} {d.doc_id!r} version {d.version}{why}" + (
                f" title {_preview(d.title, 40)!r} text {_preview(d.text)!r} metadata {d.metadata}"
                + (f" acl {d.acl}" if d.acl is not None else "") if d.op == "upsert" else ""))
            console.print(untrusted(shown), soft_wrap=True)
        elif isinstance(checked, Rejected):
            problems += 1
            for error in checked.errors:
                console.print(Text.assemble((f"{where}: dead letter: ", "red"), untrusted(f"{error.loc}: {error.msg}")),
                              soft_wrap=True)
        else:
            reason = contract.mapper.change(message).reason  # type: ignore[union-attr]
            console.print(untrusted(f"{where}: skipped: {reason}"), soft_wrap=True)
    console.print(untrusted(f"{len(messages)} record(s): {contract.counts.mapped} mapped, {contract.counts.skipped} "
                            f"skipped, {problems} dead letter(s)"))
    if problems:
        raise typer.Exit(1)
