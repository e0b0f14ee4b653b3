"""Reading a sources file: what it accepts, and one clear line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.sources.mapping import InvalidSources, Template, configured_sources, load_sources, parse_sources

ARTICLES = """
sources:
  - name: articles
    topic: dbserver1.public.articles
    format: debezium-json
    doc_id: "article-{id}"
    title: "{title}"
    text: "{title}\\n\\n{body}"
    metadata: {author: "{author}", year: "{year}", city: "{address.city}"}
    version: source.lsn
    acl: readers
    where: {status: [published, featured]}
  - name: notes
    topic: notes
    format: json
    doc_id: "{key}"
    text: "{text}"
    version: updated_at
"""


def test_a_file_with_two_sources() -> None:
    articles, notes = parse_sources(ARTICLES)
    assert articles.name == "articles" and articles.doc_id.fields == ["id"]
    assert articles.text.fields == ["title", "body"] and articles.metadata["city"].single_field == "address.city"
    assert articles.where == {"status": ["published", "featured"]} and articles.acl == "readers"
    assert notes.version == "updated_at" and notes.title is None and notes.metadata == {}


@pytest.mark.parametrize(("change", "problem"), [
    (("name: articles", "name: Articles!"), "sources.0.name"),
    (("format: debezium-json", "format: avro-x"), "sources.0.format"),
    (('doc_id: "article-{id}"', 'doc_id: "article-{id"'), "expected '}'"),
    (('doc_id: "article-{id}"', 'doc_id: "article"'), "doc_id must name at least one field"),
    (('doc_id: "article-{id}"', 'doc_id: "{id!r}"'), "no format spec or conversion"),
    (('doc_id: "article-{id}"', 'doc_id: "{0}"'), "is not a field name"),
    (("version: source.lsn", "version: source.lsn\n    extra: 1"), "sources.0.extra"),
    (("version: updated_at", "version: source.lsn"), "rows of the json format have no source block"),
    (("topic: notes", "topic: dbserver1.public.articles"), "two sources share the topic"),
    (("name: notes", "name: articles"), "two sources share the name"),
    (("where: {status: [published, featured]}", "where: {status: []}"), "an empty list matches no row"),
    (("topic: notes", "topic: documents"), "is one of gristmill's own"),
    (("version: updated_at", "version: updated_at\n    on_truncate: delete-all"), "a truncate has no row"),
    (("metadata: {", "metadata: {x: 3, "), "a template is a string"),
])
def test_each_problem_is_named(change: tuple[str, str], problem: str) -> None:
    with pytest.raises(InvalidSources) as caught:
        parse_sources(ARTICLES.replace(*change))
    assert problem in str(caught.value)


def test_not_yaml_not_a_list_unreadable(tmp_path: Path) -> None:
    with pytest.raises(InvalidSources, match=r"not YAML \(line 2"):
        parse_sources("sources: [\n")
    with pytest.raises(InvalidSources, match="expected a mapping with a `sources:` list"):
        parse_sources("- a\n- b\n")
    with pytest.raises(InvalidSources, match="cannot read the sources file"):
        load_sources(tmp_path / "missing.yaml")
    with pytest.raises(InvalidSources, match="is one of gristmill's own"):
        parse_sources(ARTICLES.replace("topic: notes", "topic: prod.documents"), namespace="prod")


def test_templates() -> None:
    assert Template("{a}").single_field == "a" and Template("x{a}").single_field is None
    assert Template("{{literal}} {a.b}").fields == ["a.b"]


def test_the_shipped_example_is_a_working_file() -> None:
    example = Path(__file__).resolve().parents[3] / "deploy" / "sources" / "example.yaml"
    assert [s.name for s in configured_sources(example, registry=True)] == ["articles", "products", "notes"]
    with pytest.raises(InvalidSources, match="products are read through a schema registry"):
        configured_sources(example)
