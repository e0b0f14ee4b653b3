"""Source mappings: how records of a topic gristmill does not own become document events.

`GRISTMILL_SOURCES_FILE` names a YAML file with a list of sources; each names its topic, its format and templates
over the row's fields for `doc_id`, `title`, `text` and `metadata`, where the version comes from, an optional field
holding the acl, and an optional row filter. Everything is checked when the file is read, so a worker never starts
with a mapping that cannot work.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from schemas.errors import GristmillError
from streams.topics import TOPIC_RECORDS

Format = Literal["debezium-json", "json", "avro", "json-schema"]
Envelope = Literal["row", "debezium"]
REGISTRY_FORMATS = ("avro", "json-schema")  # framed by a schema registry
#: Where a version comes from besides a row field: Debezium's source block, or the Kafka record itself.
VERSION_ORIGINS = ("source.lsn", "source.ts_ms", "source.binlog", "kafka.offset", "kafka.timestamp")
_FIELD_PATH = re.compile(r"^[A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*)*$")
_NAME = r"^[a-z0-9][a-z0-9_\-]{0,62}$"
ScalarValue = str | int | float | bool


class InvalidSources(GristmillError, ValueError):
    """The sources file cannot be used: unreadable, not YAML, or a source that cannot work (one line per problem)."""


class Template:
    """`"article-{id}"`, `"{title}"`, `"{title}\\n\\n{body}"`: text with `{field}` or `{nested.field}` holes."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[tuple[str, str | None]] = []  # (literal, field path or None)
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise ValueError(f"template {text!r}: {exc}") from None
        for literal, field, spec, conversion in parsed:
            if field is not None and (spec or conversion):
                raise ValueError(f"template {text!r}: {{{field}}} takes no format spec or conversion")
            if field is not None and not _FIELD_PATH.match(field):
                raise ValueError(f"template {text!r}: {{{field}}} is not a field name (letters, digits, _ and -, "
                                 "dots for nested fields)")
            self.parts.append((literal, field))

    @property
    def fields(self) -> list[str]:
        return [field for _, field in self.parts if field is not None]

    @property
    def single_field(self) -> str | None:
        """The field of a template that is exactly one hole (`"{year}"`): its value keeps its type."""
        return self.parts[0][1] if len(self.parts) == 1 and not self.parts[0][0] else None


def _template(value: object) -> Template:
    if not isinstance(value, str):
        raise ValueError("a template is a string such as \"{title}\" or \"article-{id}\"")
    return Template(value)


class SourceMapping(BaseModel):
    """One source: a topic, its format, and how a row becomes a document."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    name: Annotated[str, StringConstraints(pattern=_NAME)] = Field(
        description="The source's name: lower-case letters, digits, _ and -; it is every document's `source`.")
    topic: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._\-]{1,249}$")]
    format: Format
    envelope: Envelope | None = Field(default=None, description="avro and json-schema: `row` (the default: each "
                                      "value is a row) or `debezium` (Debezium change events through the registry's "
                                      "converter).")
    doc_id: Template
    text: Template
    title: Template | None = None
    metadata: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,64}$")], Template] = Field(
        default_factory=dict, max_length=64)
    version: str = Field(description="source.lsn, source.ts_ms, source.binlog (Debezium), kafka.offset, "
                                     "kafka.timestamp, or a row field (an integer, or an ISO-8601 time).")
    acl: str | None = Field(default=None, description="A row field holding the document's principals (a list, or "
                                                      "one string of them separated by commas or spaces).")
    on_truncate: Literal["deadletter", "delete-all"] = Field(
        default="deadletter", description="A Debezium truncate: a dead letter saying so, or `delete-all`: delete "
                                          "every document of this source older than the truncate.")
    where: dict[str, ScalarValue | list[ScalarValue]] = Field(
        default_factory=dict, description="Only rows whose fields equal these values (a list: any of them) are "
                                          "documents; a row that leaves the filter leaves the index.")

    @field_validator("doc_id", "text", "title", mode="before")
    @classmethod
    def _templates(cls, value: object) -> Template | None:
        return None if value is None else _template(value)

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value: object) -> object:
        if not isinstance(value, Mapping):
            raise ValueError("metadata maps names to templates, such as {author: \"{author}\"}")
        return {key: _template(item) for key, item in value.items()}

    @field_validator("version", "acl")
    @classmethod
    def _field(cls, value: str | None) -> str | None:
        if value is not None and value not in VERSION_ORIGINS and not _FIELD_PATH.match(value):
            raise ValueError(f"{value!r} is not a field name")
        return value

    @field_validator("where")
    @classmethod
    def _where(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, allowed in value.items():
            if not _FIELD_PATH.match(key):
                raise ValueError(f"{key!r} is not a field name")
            if isinstance(allowed, list) and not allowed:
                raise ValueError(f"{key}: an empty list matches no row")
        return value

    @property
    def changes(self) -> Envelope:
        """What each value is: a Debezium change event or a row."""
        return "debezium" if self.format == "debezium-json" else self.envelope or "row"

    @model_validator(mode="after")
    def _fits_format(self) -> SourceMapping:
        if self.envelope is not None and self.format not in REGISTRY_FORMATS:
            raise ValueError(f"envelope is for the avro and json-schema formats; {self.format} says what it is")
        if self.on_truncate == "delete-all" and not self.version.startswith("source."):
            raise ValueError("on_truncate: delete-all needs a version of the change stream (source.lsn, "
                             "source.binlog or source.ts_ms): a truncate has no row to take a version from")
        if self.changes != "debezium" and self.version.startswith("source."):
            raise ValueError(f"version {self.version} is Debezium's: rows of the {self.format} format have no "
                             "source block")
        if not self.doc_id.fields:
            raise ValueError("doc_id must name at least one field (every row the same id would overwrite itself)")
        return self


class SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: list[SourceMapping] = Field(max_length=64)

    @model_validator(mode="after")
    def _distinct(self) -> SourcesFile:
        for attribute in ("name", "topic"):
            seen = [getattr(s, attribute) for s in self.sources]
            doubles = sorted({v for v in seen if seen.count(v) > 1})
            if doubles:
                raise ValueError(f"two sources share the {attribute} {doubles[0]!r}")
        return self


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "file"


def parse_sources(text: str, origin: str = "sources file", namespace: str = "") -> list[SourceMapping]:
    """The sources of a YAML text; `InvalidSources` lists every problem, one per line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise InvalidSources(f"{origin}: not YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict) or "sources" not in data:
        raise InvalidSources(f"{origin}: expected a mapping with a `sources:` list")
    try:
        sources = SourcesFile.model_validate(data).sources
    except ValidationError as exc:
        raise InvalidSources("\n".join(f"{origin}: {_where(e['loc'])}: {e['msg']}"
                                       for e in exc.errors(include_url=False))) from None
    own = {f"{namespace}.{t}" if namespace else t for t in TOPIC_RECORDS}
    for source in sources:
        if source.topic in own:
            raise InvalidSources(f"{origin}: sources.{source.name}: topic {source.topic!r} is one of gristmill's "
                                 "own (produce gristmill's documents to it directly)")
    return sources


def load_sources(path: Path, namespace: str = "") -> list[SourceMapping]:
    """Read and check `path` (`GRISTMILL_SOURCES_FILE`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSources(f"cannot read the sources file {path}: {exc}") from None
    return parse_sources(text, str(path), namespace)


def configured_sources(sources_file: Path | None, namespace: str = "", registry: bool = False
                       ) -> list[SourceMapping]:
    """The sources `GRISTMILL_SOURCES_FILE` names; none when it is unset. Sources framed by a schema registry need
    one configured (`registry`)."""
    sources = [] if sources_file is None else load_sources(sources_file, namespace)
    framed = [s.name for s in sources if s.format in REGISTRY_FORMATS]
    if framed and not registry:
        raise InvalidSources(f"{sources_file}: sources {', '.join(framed)} are read through a schema registry: set "
                             "GRISTMILL_SCHEMA_REGISTRY_URL")
    return sources
