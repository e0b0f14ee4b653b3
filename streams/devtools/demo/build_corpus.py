"""Rebuild `corpus.jsonl` from this Python's own documentation (PSF-licensed):
`python -m streams.devtools.demo.build_corpus`.

Each record is a `documents` event: the pydoc language-reference topics and the docstrings of common
standard-library modules, functions and classes.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Iterator

from streams.devtools.demo import CORPUS

MODULES = [
    "builtins", "json", "os", "os.path", "re", "itertools", "collections", "functools", "datetime",
    "pathlib", "string", "math", "random", "statistics", "textwrap", "shutil", "subprocess", "csv",
    "heapq", "bisect", "sqlite3", "urllib.parse", "hashlib", "base64", "uuid", "time", "logging",
    "argparse", "asyncio", "threading", "queue", "tempfile", "glob", "fnmatch", "zipfile", "gzip",
    "io", "contextlib", "dataclasses", "enum", "typing", "operator", "copy", "pickle", "struct",
    "decimal", "fractions", "difflib", "unicodedata", "html", "xml.etree.ElementTree", "email.message",
    "http.client", "socket", "select", "signal", "sys", "platform", "traceback", "warnings", "weakref",
]
MIN_CHARS, MAX_DOCS_PER_MODULE = 200, 12


def _docstrings() -> Iterator[tuple[str, str, str]]:
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        yield module_name, module_name, inspect.getdoc(module) or ""
        taken = 0
        for name, member in sorted(vars(module).items()):
            if name.startswith("_") or taken >= MAX_DOCS_PER_MODULE:
                continue
            if not (inspect.isfunction(member) or inspect.isbuiltin(member) or inspect.isclass(member)):
                continue
            if getattr(member, "__module__", module_name) not in (module_name, None) and module_name != "builtins":
                continue
            doc = inspect.getdoc(member) or ""
            if len(doc) >= MIN_CHARS:
                taken += 1
                yield f"{module_name}.{name}", f"{module_name}.{name}", doc


def build() -> int:
    from pydoc_data.topics import topics

    records = []
    for topic, text in sorted(topics.items()):
        records.append({"doc_id": f"topic:{topic}", "version": 1, "op": "upsert", "title": f"Python {topic}",
                        "text": text.strip(), "source": "language-reference"})
    seen = set()
    for doc_id, title, text in _docstrings():
        if len(text) >= MIN_CHARS and doc_id not in seen:
            seen.add(doc_id)
            records.append({"doc_id": f"api:{doc_id}", "version": 1, "op": "upsert", "title": title,
                            "text": text.strip(), "source": "library-reference"})
    with CORPUS.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(records)


if __name__ == "__main__":
    print(f"{build()} documents -> {CORPUS}")
