"""`gristmill produce documents|feedback`: events from files and judgements to the topics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streams.cli.context import console, fail, load_settings, progress_bar, require_kafka, styled, untrusted


def produce_feedback(
    query_id: Annotated[str, typer.Argument(help="The query judged (as answered on `responses`).")],
    doc_id: Annotated[str, typer.Argument(help="The document judged.")],
    label: Annotated[int | None, typer.Option(help="1 relevant, 0 neutral, -1 not relevant.")] = None,
    rating: Annotated[int | None, typer.Option(help="1..5 (4-5 positive, 1-2 negative).")] = None,
) -> None:
    """Judge one answer: a `feedback` record (exactly one of --label or --rating)."""
    from pydantic import ValidationError

    from schemas import FeedbackEvent
    from streams.produce import produce_record

    settings = require_kafka(load_settings())
    try:
        event = FeedbackEvent(query_id=query_id, doc_id=doc_id, label=label, rating=rating)
    except ValidationError as exc:
        raise fail("invalid feedback: ", exc.errors(include_url=False)[0]["msg"], status=2) from exc
    produce_record(settings, "feedback", query_id, event)
    console.print(untrusted(f"feedback on {query_id} -> {doc_id} sent"))


def produce_documents(
    path: Annotated[Path, typer.Argument(help="JSONL of document events, BEIR corpus.jsonl, or a folder.")],
    version: Annotated[int | None, typer.Option(help="Version for records without one (default: now, ms).")] = None,
    follow_symlinks: Annotated[bool, typer.Option(help="Also send files that symlinks in the folder point to "
                                                       "outside it.")] = False,
) -> None:
    """Produce documents to the `documents` topic, with a progress bar. Exit status 4 when some could not be sent."""
    from streams.produce import DocumentSource, produce
    from streams.topics import TopicNames

    if version is not None:  # checked as the `documents` contract will, before anything is sent
        from pydantic import TypeAdapter, ValidationError

        from schemas.records import DocumentVersion
        try:
            TypeAdapter(DocumentVersion).validate_python(version)
        except ValidationError as exc:
            raise fail("invalid --version: ", exc.errors(include_url=False)[0]["msg"], status=2) from None
    settings = require_kafka(load_settings())
    try:
        source = DocumentSource(path, version, follow_symlinks)
    except (OSError, ValueError) as exc:
        raise fail("cannot read ", path, f": {exc}") from exc
    topic = TopicNames(settings.namespace).documents
    with progress_bar() as progress:
        task = progress.add_task(untrusted(f"{path.name} -> {topic}").plain, total=source.count)
        delivery = produce(settings, topic, source.records(), lambda n: progress.advance(task, n))
    for skipped in source.skipped:
        console.print(styled("not sent: ", "yellow", f"{skipped.what}: {skipped.reason}"), soft_wrap=True)
    for reason in delivery.failed[:10]:
        console.print(styled("not delivered: ", "yellow", reason), soft_wrap=True)
    unsent = len(source.skipped) + len(delivery.failed)
    console.print(untrusted(f"produced {delivery.sent} records to {topic} at {settings.kafka_bootstrap_servers}"
                            + (f"; {unsent} could not be sent" if unsent else "")))
    if unsent:
        raise typer.Exit(4)
